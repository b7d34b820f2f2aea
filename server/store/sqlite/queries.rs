//! [`QueryStore`] on SQLite: the `queries` table, one row per finished
//! query with its summary and event log as the query engine's JSON.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, internal};
use crate::error::Result;
use crate::store::{QueryStore, StoredQuery};

/// A `queries` row: id, created_at, state, info, events.
fn stored_query(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredQuery> {
    Ok(StoredQuery {
        id: row.get(0)?,
        created_at: row.get(1)?,
        state: row.get(2)?,
        info: row.get(3)?,
        events: row.get(4)?,
    })
}

impl QueryStore for SqliteStore {
    fn save_query(&self, q: &StoredQuery) -> Result<()> {
        self.track(|| {
            self.conn()
                .execute(
                    "INSERT INTO queries (id, created_at, state, info, events)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET
                       state = excluded.state, info = excluded.info, events = excluded.events",
                    params![q.id, q.created_at, q.state, q.info, q.events],
                )
                .map_err(internal)?;
            Ok(())
        })
    }

    fn get_query(&self, id: &str) -> Result<Option<StoredQuery>> {
        self.read()
            .query_row(
                "SELECT id, created_at, state, info, events FROM queries WHERE id = ?1",
                params![id],
                stored_query,
            )
            .optional()
            .map_err(internal)
    }

    fn list_queries(
        &self,
        state: Option<&str>,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredQuery>> {
        // Without a cursor every row is before (i64::MAX, "").
        let (before_time, before_id) = before.unwrap_or((i64::MAX, ""));
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, created_at, state, info, '' FROM queries
                 WHERE (?1 IS NULL OR state = ?1)
                   AND (created_at < ?2 OR (created_at = ?2 AND id < ?3))
                 ORDER BY created_at DESC, id DESC
                 LIMIT ?4",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map(
                params![state, before_time, before_id, limit as i64],
                stored_query,
            )
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }
}
