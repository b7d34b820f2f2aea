//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection behind a mutex: SQLite allows one writer at a time anyway,
//! and the calls are short. `synchronous = FULL` makes every commit durable
//! before it returns; WAL keeps readers from blocking on the writer's fsync
//! and turns each commit into one sequential append.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    CollectionStore, IndexSource, KvEntry, KvListQuery, KvStore, KvWrite, LabelledVectors,
    PointStore, PointsWrite, QueryStore, StoredCollection, StoredPoint, StoredQuery, UpsertedPoint,
    migrations,
};
use crate::error::{Error, Result};

/// The store's file name inside the data directory.
pub const DB_FILE: &str = "agentd.db";

/// SQLite-backed store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn internal(e: rusqlite::Error) -> Error {
    Error::Internal(format!("store: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) `agentd.db` in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| Error::Internal(format!("opening {}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// An in-memory store, for unit tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(internal)?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        // Takes effect only when the file is created (before WAL mode is
        // set). Point rows live in a WITHOUT ROWID B-tree, whose cells stay
        // on their page only up to about a quarter of the page: with the
        // default 4 KiB pages, a 384-dimension vector (1.5 KiB) spilled to an
        // overflow page per point, tripling the bytes written per upsert.
        // 16 KiB pages keep vectors of up to about 1,000 dimensions inline.
        conn.pragma_update(None, "page_size", 16_384)
            .map_err(internal)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(internal)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(internal)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(internal)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(internal)?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction
        // (rusqlite rolls back on drop), so the connection is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

const COLUMNS: &str =
    "namespace, key, value, content_type, metadata, version, created_at, updated_at, expires_at";
const COLUMNS_NO_VALUE: &str =
    "namespace, key, X'', content_type, metadata, version, created_at, updated_at, expires_at";
/// A row is live when it has no expiry or expires after `now` (`?now`).
const LIVE: &str = "(expires_at IS NULL OR expires_at > :now)";

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<KvEntry> {
    let metadata: String = row.get(4)?;
    let metadata: BTreeMap<String, String> = serde_json::from_str(&metadata).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(KvEntry {
        namespace: row.get(0)?,
        key: row.get(1)?,
        value: row.get(2)?,
        content_type: row.get(3)?,
        metadata,
        version: row.get::<_, i64>(5)? as u64,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        expires_at: row.get(8)?,
    })
}

/// Compare-and-set: `expected` (if given) must equal the live version, 0
/// meaning "absent".
fn check_version(expected: Option<u64>, current: u64) -> Result<()> {
    match expected {
        Some(expected) if expected != current => Err(Error::VersionConflict {
            expected,
            actual: current,
        }),
        _ => Ok(()),
    }
}

/// The smallest string greater than every string that starts with `prefix`,
/// if there is one: the prefix with its last character incremented (UTF-8
/// order is code point order, and SQLite compares TEXT bytewise).
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        while next <= char::MAX as u32 {
            if let Some(c) = char::from_u32(next) {
                chars.push(c);
                return Some(chars.into_iter().collect());
            }
            next += 1; // skip the surrogate gap
        }
    }
    None
}

impl KvStore for SqliteStore {
    fn kv_put(&self, write: KvWrite, if_version: Option<u64>, now: i64) -> Result<KvEntry> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(internal)?;
        let live: Option<(i64, i64)> = tx
            .query_row(
                &format!("SELECT version, created_at FROM kv WHERE namespace = :ns AND key = :key AND {LIVE}"),
                rusqlite::named_params! {":ns": write.namespace, ":key": write.key, ":now": now},
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(internal)?;
        let current = live.map_or(0, |(v, _)| v as u64);
        check_version(if_version, current)?;
        let created_at = live.map_or(now, |(_, c)| c);
        let metadata = serde_json::to_string(&write.metadata)
            .map_err(|e| Error::Internal(format!("encoding metadata: {e}")))?;
        let version = current + 1;
        tx.execute(
            "INSERT INTO kv (namespace, key, value, content_type, metadata, version, created_at, updated_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (namespace, key) DO UPDATE SET
               value = excluded.value, content_type = excluded.content_type,
               metadata = excluded.metadata, version = excluded.version,
               created_at = excluded.created_at, updated_at = excluded.updated_at,
               expires_at = excluded.expires_at",
            params![
                write.namespace,
                write.key,
                write.value,
                write.content_type,
                metadata,
                version as i64,
                created_at,
                now,
                write.expires_at
            ],
        )
        .map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(KvEntry {
            namespace: write.namespace,
            key: write.key,
            value: write.value,
            content_type: write.content_type,
            metadata: write.metadata,
            version,
            created_at,
            updated_at: now,
            expires_at: write.expires_at,
        })
    }

    fn kv_get(&self, namespace: &str, key: &str, now: i64) -> Result<Option<KvEntry>> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM kv WHERE namespace = :ns AND key = :key AND {LIVE}"
                ),
                rusqlite::named_params! {":ns": namespace, ":key": key, ":now": now},
                entry,
            )
            .optional()
            .map_err(internal)
    }

    fn kv_delete(
        &self,
        namespace: &str,
        key: &str,
        if_version: Option<u64>,
        now: i64,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(internal)?;
        let current: u64 = tx
            .query_row(
                &format!("SELECT version FROM kv WHERE namespace = :ns AND key = :key AND {LIVE}"),
                rusqlite::named_params! {":ns": namespace, ":key": key, ":now": now},
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map_err(internal)?
            .map_or(0, |v| v as u64);
        check_version(if_version, current)?;
        // Expired rows go too: they were already invisible.
        tx.execute(
            "DELETE FROM kv WHERE namespace = ?1 AND key = ?2",
            params![namespace, key],
        )
        .map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(current > 0)
    }

    fn kv_list(&self, q: &KvListQuery<'_>, now: i64) -> Result<Vec<KvEntry>> {
        let columns = if q.with_values {
            COLUMNS
        } else {
            COLUMNS_NO_VALUE
        };
        let upper = prefix_upper_bound(q.prefix);
        // The lower bound is the later of the prefix and the page cursor.
        let (lower, inclusive) = match q.after {
            Some(after) if after >= q.prefix => (after, false),
            _ => (q.prefix, true),
        };
        let lower_op = if inclusive { ">=" } else { ">" };
        let upper_clause = if upper.is_some() {
            "AND key < :upper"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {columns} FROM kv
             WHERE namespace = :ns AND key {lower_op} :lower {upper_clause} AND {LIVE}
             ORDER BY key LIMIT :limit"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = match &upper {
            Some(upper) => stmt.query_map(
                rusqlite::named_params! {":ns": q.namespace, ":lower": lower, ":upper": upper, ":now": now, ":limit": limit},
                entry,
            ),
            None => stmt.query_map(
                rusqlite::named_params! {":ns": q.namespace, ":lower": lower, ":now": now, ":limit": limit},
                entry,
            ),
        }
        .map_err(internal)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(internal)
    }

    fn kv_purge_expired(&self, now: i64) -> Result<u64> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                params![now],
            )
            .map_err(internal)?;
        Ok(n as u64)
    }
}

fn collection(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCollection> {
    Ok(StoredCollection {
        name: row.get(0)?,
        definition: row.get(1)?,
        created_at: row.get(2)?,
        points: row.get::<_, i64>(3)? as u64,
    })
}

/// Collection columns, with the number of points.
const COLLECTION_COLUMNS: &str = "name, definition, created_at,
    (SELECT COUNT(*) FROM points WHERE points.collection = collections.name)";

impl CollectionStore for SqliteStore {
    fn create_collection(&self, c: &StoredCollection) -> Result<()> {
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
        let n = self
            .conn()
            .execute("DELETE FROM collections WHERE name = ?1", params![name])
            .map_err(internal)?;
        Ok(n > 0)
    }
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A `SELECT id, vector, payload` row as a point.
fn point_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredPoint> {
    Ok(StoredPoint {
        id: row.get(0)?,
        vector: vector_from(&row.get::<_, Vec<u8>>(1)?),
        payload: row.get(2)?,
    })
}

/// The collection's next change sequence and label; NotFound if absent.
fn counters(tx: &rusqlite::Transaction<'_>, collection: &str) -> Result<(i64, i64)> {
    tx.query_row(
        "SELECT next_seq, next_label FROM collections WHERE name = ?1",
        params![collection],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
    .map_err(internal)?
    .ok_or_else(|| Error::NotFound {
        kind: "collection",
        name: collection.to_owned(),
    })
}

impl PointStore for SqliteStore {
    fn upsert_points(
        &self,
        collection: &str,
        points: &[StoredPoint],
    ) -> Result<PointsWrite<UpsertedPoint>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(internal)?;
        let (seq, mut label) = counters(&tx, collection)?;
        let mut outcome = Vec::with_capacity(points.len());
        {
            let mut find = tx
                .prepare_cached("SELECT label FROM points WHERE collection = ?1 AND id = ?2")
                .map_err(internal)?;
            let mut write = tx
                .prepare_cached(
                    "INSERT INTO points (collection, id, label, seq, vector, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (collection, id) DO UPDATE SET
                       label = excluded.label, seq = excluded.seq,
                       vector = excluded.vector, payload = excluded.payload",
                )
                .map_err(internal)?;
            for p in points {
                let replaced: Option<i64> = find
                    .query_row(params![collection, p.id], |row| row.get(0))
                    .optional()
                    .map_err(internal)?;
                write
                    .execute(params![
                        collection,
                        p.id,
                        label,
                        seq,
                        vector_bytes(&p.vector),
                        p.payload
                    ])
                    .map_err(internal)?;
                outcome.push(UpsertedPoint { label, replaced });
                label += 1;
            }
        }
        tx.execute(
            "UPDATE collections SET next_seq = ?2, next_label = ?3 WHERE name = ?1",
            params![collection, seq + 1, label],
        )
        .map_err(internal)?;
        tx.commit().map_err(internal)?;
        Ok(PointsWrite {
            outcome,
            seq: seq as u64,
        })
    }

    fn get_points(&self, collection: &str, ids: &[String]) -> Result<Vec<StoredPoint>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, vector, payload FROM points WHERE collection = ?1 AND id = ?2",
            )
            .map_err(internal)?;
        let mut found = Vec::new();
        for id in ids {
            let point = stmt
                .query_row(params![collection, id], point_row)
                .optional()
                .map_err(internal)?;
            found.extend(point);
        }
        Ok(found)
    }

    fn delete_points(&self, collection: &str, ids: &[String]) -> Result<PointsWrite<i64>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(internal)?;
        let (seq, _) = counters(&tx, collection)?;
        let mut deleted = Vec::new();
        {
            let mut remove = tx
                .prepare_cached(
                    "DELETE FROM points WHERE collection = ?1 AND id = ?2 RETURNING label",
                )
                .map_err(internal)?;
            for id in ids {
                let label: Option<i64> = remove
                    .query_row(params![collection, id], |row| row.get(0))
                    .optional()
                    .map_err(internal)?;
                deleted.extend(label);
            }
        }
        let seq = if deleted.is_empty() {
            seq - 1
        } else {
            tx.execute(
                "UPDATE collections SET next_seq = ?2 WHERE name = ?1",
                params![collection, seq + 1],
            )
            .map_err(internal)?;
            seq
        };
        tx.commit().map_err(internal)?;
        Ok(PointsWrite {
            outcome: deleted,
            seq: seq as u64,
        })
    }

    fn scan_payloads(
        &self,
        collection: &str,
        visit: &mut dyn FnMut(&str, &str) -> Result<()>,
    ) -> Result<()> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id, payload FROM points WHERE collection = ?1 ORDER BY id")
            .map_err(internal)?;
        let mut rows = stmt.query(params![collection]).map_err(internal)?;
        while let Some(row) = rows.next().map_err(internal)? {
            let id: String = row.get(0).map_err(internal)?;
            let payload: String = row.get(1).map_err(internal)?;
            visit(&id, &payload)?;
        }
        Ok(())
    }

    fn index_source(&self, collection: &str, after_label: i64) -> Result<IndexSource> {
        let mut conn = self.conn();
        // One read transaction: labels, vectors and seq from the same state.
        let tx = conn.transaction().map_err(internal)?;
        let (next_seq, _) = counters(&tx, collection)?;
        let live = {
            // The label index holds the ids too (they are the table's key),
            // so this reads the index alone, not the vectors.
            let mut stmt = tx
                .prepare_cached(
                    "SELECT label, id FROM points INDEXED BY points_by_label
                     WHERE collection = ?1",
                )
                .map_err(internal)?;
            stmt.query_map(params![collection], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(internal)?
                .collect::<rusqlite::Result<Vec<(i64, String)>>>()
                .map_err(internal)?
        };
        let mut added = LabelledVectors::default();
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT label, vector FROM points WHERE collection = ?1 AND label > ?2
                     ORDER BY label",
                )
                .map_err(internal)?;
            let mut rows = stmt
                .query(params![collection, after_label])
                .map_err(internal)?;
            while let Some(row) = rows.next().map_err(internal)? {
                let label: i64 = row.get(0).map_err(internal)?;
                let bytes = row.get_ref(1).map_err(internal)?;
                let bytes = bytes
                    .as_blob()
                    .map_err(|e| Error::Internal(format!("stored vector: {e}")))?;
                added.labels.push(label);
                added.data.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
            }
        }
        tx.commit().map_err(internal)?;
        Ok(IndexSource {
            live,
            added,
            seq: (next_seq - 1) as u64,
        })
    }

    fn collection_bytes(&self, collection: &str) -> Result<u64> {
        // length() of a blob or text reads its size, not its content.
        self.conn()
            .query_row(
                "SELECT COALESCE(SUM(length(id) + length(vector) + length(payload) + 16), 0)
                 FROM points WHERE collection = ?1",
                params![collection],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(internal)
    }

    fn points_by_labels(
        &self,
        collection: &str,
        labels: &[i64],
    ) -> Result<Vec<(i64, StoredPoint)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, vector, payload FROM points WHERE collection = ?1 AND label = ?2",
            )
            .map_err(internal)?;
        let mut found = Vec::with_capacity(labels.len());
        for &label in labels {
            let point = stmt
                .query_row(params![collection, label], point_row)
                .optional()
                .map_err(internal)?;
            found.extend(point.map(|p| (label, p)));
        }
        Ok(found)
    }

    fn count_points(&self, collection: &str) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM points WHERE collection = ?1",
                params![collection],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(internal)
    }
}

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
    }

    fn get_query(&self, id: &str) -> Result<Option<StoredQuery>> {
        self.conn()
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
        let conn = self.conn();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(ns: &str, key: &str, value: &str) -> KvWrite {
        KvWrite {
            namespace: ns.into(),
            key: key.into(),
            value: value.as_bytes().to_vec(),
            content_type: "text/plain".into(),
            metadata: BTreeMap::from([("source".to_string(), "test".to_string())]),
            expires_at: None,
        }
    }

    fn list<'a>(
        store: &SqliteStore,
        ns: &'a str,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> Vec<String> {
        store
            .kv_list(
                &KvListQuery {
                    namespace: ns,
                    prefix,
                    after,
                    limit,
                    with_values: false,
                },
                0,
            )
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    #[test]
    fn versions_grow_and_compare_and_set_checks_them() {
        let s = SqliteStore::in_memory().unwrap();
        let first = s.kv_put(write("n", "k", "a"), Some(0), 10).unwrap();
        assert_eq!((first.version, first.created_at), (1, 10));
        let err = s.kv_put(write("n", "k", "b"), Some(0), 11).unwrap_err();
        assert!(
            matches!(
                err,
                Error::VersionConflict {
                    expected: 0,
                    actual: 1
                }
            ),
            "{err}"
        );
        let second = s.kv_put(write("n", "k", "b"), Some(1), 12).unwrap();
        assert_eq!(
            (second.version, second.created_at, second.updated_at),
            (2, 10, 12)
        );
        let got = s.kv_get("n", "k", 13).unwrap().unwrap();
        assert_eq!(got.value, b"b");
        assert_eq!(got.metadata["source"], "test");
        assert!(s.kv_delete("n", "k", Some(1), 14).is_err(), "stale version");
        assert!(s.kv_delete("n", "k", Some(2), 14).unwrap());
        assert!(!s.kv_delete("n", "k", None, 15).unwrap());
    }

    #[test]
    fn expired_entries_are_invisible_and_purged() {
        let s = SqliteStore::in_memory().unwrap();
        let mut w = write("n", "k", "a");
        w.expires_at = Some(100);
        s.kv_put(w, None, 50).unwrap();
        assert!(s.kv_get("n", "k", 99).unwrap().is_some());
        assert!(s.kv_get("n", "k", 100).unwrap().is_none());
        // A write over an expired key starts again at version 1.
        let again = s.kv_put(write("n", "k", "b"), Some(0), 101).unwrap();
        assert_eq!(again.version, 1);
        let mut w = write("n", "gone", "x");
        w.expires_at = Some(100);
        s.kv_put(w, None, 50).unwrap();
        assert_eq!(s.kv_purge_expired(200).unwrap(), 1);
    }

    #[test]
    fn list_pages_in_key_order_within_the_prefix() {
        let s = SqliteStore::in_memory().unwrap();
        for k in ["b/2", "a", "b/1", "b/3", "c", "b", "b\u{10FFFF}", "é"] {
            s.kv_put(write("n", k, "v"), None, 1).unwrap();
        }
        s.kv_put(write("other", "b/9", "v"), None, 1).unwrap();
        assert_eq!(list(&s, "n", "b/", None, 10), ["b/1", "b/2", "b/3"]);
        assert_eq!(list(&s, "n", "b/", None, 2), ["b/1", "b/2"]);
        assert_eq!(list(&s, "n", "b/", Some("b/2"), 2), ["b/3"]);
        assert_eq!(
            list(&s, "n", "b", None, 10),
            ["b", "b/1", "b/2", "b/3", "b\u{10FFFF}"]
        );
        assert_eq!(list(&s, "n", "", Some("c"), 10), ["é"]);
    }

    #[test]
    fn upper_bounds_cover_unicode_edges() {
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    fn collection_row(s: &SqliteStore, name: &str) {
        s.create_collection(&StoredCollection {
            name: name.into(),
            definition: "{}".into(),
            created_at: 0,
            points: 0,
        })
        .unwrap();
    }

    fn point(id: &str, x: f32) -> StoredPoint {
        StoredPoint {
            id: id.into(),
            vector: vec![x, -x, 0.5],
            payload: "{}".into(),
        }
    }

    #[test]
    fn every_version_gets_a_new_label_and_changes_are_sequenced() {
        let s = SqliteStore::in_memory().unwrap();
        collection_row(&s, "c");
        let first = s
            .upsert_points("c", &[point("a", 1.0), point("b", 2.0)])
            .unwrap();
        assert_eq!(first.seq, 1);
        assert_eq!(
            first.outcome.iter().map(|u| u.label).collect::<Vec<_>>(),
            [1, 2]
        );
        let second = s.upsert_points("c", &[point("a", 3.0)]).unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(
            second.outcome[0],
            UpsertedPoint {
                label: 3,
                replaced: Some(1)
            }
        );
        let got = s.get_points("c", &["a".into(), "zz".into()]).unwrap();
        assert_eq!(
            got,
            vec![point("a", 3.0)],
            "vectors round-trip, absent ids skipped"
        );
        let deleted = s.delete_points("c", &["b".into(), "zz".into()]).unwrap();
        assert_eq!((deleted.outcome.clone(), deleted.seq), (vec![2], 3));
        assert_eq!(s.count_points("c").unwrap(), 1);
        // A deleted label is never handed out again.
        let third = s.upsert_points("c", &[point("b", 4.0)]).unwrap();
        assert_eq!(third.outcome[0].label, 4);
        // An index source sees current labels only, vectors above a label.
        let source = s.index_source("c", 3).unwrap();
        let mut live = source.live.clone();
        live.sort();
        assert_eq!(live, [(3, "a".to_owned()), (4, "b".to_owned())]);
        assert_eq!(source.added.labels, [4]);
        assert_eq!(source.added.data, point("b", 4.0).vector);
        assert_eq!(source.seq, 4);
        assert!(s.collection_bytes("c").unwrap() > 0);
        assert!(matches!(
            s.upsert_points("nope", &[point("a", 1.0)]),
            Err(Error::NotFound { .. })
        ));
        // Deleting the collection removes its points.
        assert!(s.delete_collection("c").unwrap());
        collection_row(&s, "c");
        assert_eq!(s.count_points("c").unwrap(), 0);
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SqliteStore::open(dir.path()).unwrap();
            s.kv_put(write("n", "k", "kept"), None, 1).unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.kv_get("n", "k", 2).unwrap().unwrap().value, b"kept");
    }
}
