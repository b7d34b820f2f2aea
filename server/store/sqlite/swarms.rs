//! [`SwarmStore`] on SQLite: `agent_swarms` and `agent_swarm_keys`, with
//! the member agents' rows and activity events of each change in the same
//! transaction.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::agents::append;
use super::tasks::{KeyTable, claim_key};
use super::{SqliteStore, internal};
use crate::error::Result;
use crate::store::{StoredEvent, StoredSwarm, Submitted, SwarmStore, SwarmWrite};

const SWARM_COLUMNS: &str = "id, state, created_at, body";

fn stored_swarm(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSwarm> {
    Ok(StoredSwarm {
        id: row.get(0)?,
        state: row.get(1)?,
        created_at: row.get(2)?,
        body: row.get(3)?,
    })
}

/// Upserts `swarm` in `tx`.
pub(super) fn put_swarm(tx: &Connection, s: &StoredSwarm) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO agent_swarms (id, state, created_at, body) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
        params![s.id, s.state, s.created_at, s.body],
    )?;
    Ok(())
}

fn apply(tx: &Transaction<'_>, write: &SwarmWrite) -> rusqlite::Result<Vec<StoredEvent>> {
    put_swarm(tx, &write.swarm)?;
    for a in &write.agents {
        tx.execute(
            "UPDATE agents SET state = ?2, swarm_id = ?3, body = ?4 WHERE id = ?1",
            params![a.id, a.state, a.swarm_id, a.body],
        )?;
    }
    append(tx, write.events.clone())
}

impl SwarmStore for SqliteStore {
    fn create_swarm(
        &self,
        write: &SwarmWrite,
        key: Option<(&str, &str)>,
        since: i64,
    ) -> Result<Submitted> {
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(internal)?;
            let keys = KeyTable {
                table: "agent_swarm_keys",
                ids: "swarm_id",
            };
            let id = [write.swarm.id.as_str()];
            let created = write.swarm.created_at;
            if let Some((ids, print)) =
                claim_key(&tx, &keys, key, &id, created, since).map_err(internal)?
            {
                tx.commit().map_err(internal)?;
                return Ok(Submitted::Existing(ids, print));
            }
            let events = apply(&tx, write).map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(Submitted::Created(events))
        })
    }

    fn swarm_key(&self, key: &str, since: i64) -> Result<Option<(String, String)>> {
        self.read()
            .query_row(
                "SELECT swarm_id, fingerprint FROM agent_swarm_keys
                 WHERE key = ?1 AND created_at >= ?2",
                params![key, since],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(internal)
    }

    fn save_swarm(&self, write: &SwarmWrite) -> Result<Vec<StoredEvent>> {
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(internal)?;
            let events = apply(&tx, write).map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(events)
        })
    }

    fn get_swarm(&self, id: &str) -> Result<Option<StoredSwarm>> {
        self.read()
            .query_row(
                &format!("SELECT {SWARM_COLUMNS} FROM agent_swarms WHERE id = ?1"),
                params![id],
                stored_swarm,
            )
            .optional()
            .map_err(internal)
    }

    fn list_swarms(
        &self,
        include_dissolved: bool,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredSwarm>> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {SWARM_COLUMNS} FROM agent_swarms
                 WHERE seq > COALESCE((SELECT seq FROM agent_swarms WHERE id = ?1), 0)
                   AND (?2 OR state = 'active')
                 ORDER BY seq LIMIT ?3"
            ))
            .map_err(internal)?;
        let rows = stmt
            .query_map(
                params![after, include_dissolved, limit as i64],
                stored_swarm,
            )
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }
}
