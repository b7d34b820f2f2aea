//! Schema migrations, applied in order at open and recorded in SQLite's
//! `user_version`, so a data directory from an older agentd is upgraded in
//! place and one from a newer agentd is refused rather than misread.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// Every migration, in order; the schema version is the count applied.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_kv", include_str!("migrations/0001_kv.sql")),
    (
        "0002_collections",
        include_str!("migrations/0002_collections.sql"),
    ),
    ("0003_points", include_str!("migrations/0003_points.sql")),
    (
        "0004_no_deletion_log",
        include_str!("migrations/0004_no_deletion_log.sql"),
    ),
    ("0005_queries", include_str!("migrations/0005_queries.sql")),
    ("0006_agents", include_str!("migrations/0006_agents.sql")),
    (
        "0007_agent_tasks",
        include_str!("migrations/0007_agent_tasks.sql"),
    ),
    ("0008_swarms", include_str!("migrations/0008_swarms.sql")),
    (
        "0009_activity_indexes",
        include_str!("migrations/0009_activity_indexes.sql"),
    ),
    (
        "0010_collection_counters",
        include_str!("migrations/0010_collection_counters.sql"),
    ),
];

/// Brings `conn` to the latest schema, each migration in its own transaction.
pub fn apply(conn: &mut Connection) -> Result<()> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .map_err(internal)?
        .try_into()
        .map_err(|_| Error::Internal("negative schema version".into()))?;
    if current > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "the data directory has schema version {current}, newer than this agentd knows ({}); \
             use a newer agentd",
            MIGRATIONS.len()
        )));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction().map_err(internal)?;
        tx.execute_batch(sql)
            .map_err(|e| Error::Internal(format!("migration {name}: {e}")))?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(internal)?;
        tx.commit().map_err(internal)?;
        tracing::info!(migration = name, "store schema migrated");
    }
    Ok(())
}

fn internal(e: rusqlite::Error) -> Error {
    Error::Internal(format!("store: {e}"))
}
