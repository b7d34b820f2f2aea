//! [`CollectionStore`] on SQLite: the `collections` table (definitions as
//! the memory engine's JSON, and each collection's change counters).

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, internal};
use crate::error::{Error, Result};
use crate::store::{CollectionStore, StoredCollection};

fn collection(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCollection> {
    Ok(StoredCollection {
        name: row.get(0)?,
        definition: row.get(1)?,
        created_at: row.get(2)?,
        points: row.get::<_, i64>(3)? as u64,
    })
}

/// Collection columns, with the number of points (kept with each write).
const COLLECTION_COLUMNS: &str = "name, definition, created_at, point_count";

impl CollectionStore for SqliteStore {
    fn create_collection(&self, c: &StoredCollection) -> Result<()> {
        self.track(|| {
            let inserted = self
                .conn()
                .execute(
                    "INSERT INTO collections (name, definition, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                    params![c.name, c.definition, c.created_at],
                )
                .map_err(internal)?;
            if inserted == 0 {
                return Err(Error::AlreadyExists {
                    kind: "collection",
                    name: c.name.clone(),
                });
            }
            Ok(())
        })
    }

    fn get_collection(&self, name: &str) -> Result<Option<StoredCollection>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLLECTION_COLUMNS} FROM collections WHERE name = ?1"),
                params![name],
                collection,
            )
            .optional()
            .map_err(internal)
    }

    fn list_collections(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredCollection>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLLECTION_COLUMNS} FROM collections
                 WHERE name > ?1 ORDER BY name LIMIT ?2"
            ))
            .map_err(internal)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after.unwrap_or(""), limit], collection)
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)
    }

    fn delete_collection(&self, name: &str) -> Result<bool> {
        self.track(|| {
            let n = self
                .conn()
                .execute("DELETE FROM collections WHERE name = ?1", params![name])
                .map_err(internal)?;
            Ok(n > 0)
        })
    }
}
