//! [`KvStore`] on SQLite: the `kv` table, one row per live or expired key.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, internal};
use crate::error::{Error, Result};
use crate::store::{KvEntry, KvListQuery, KvStore, KvWrite};

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
        self.track(|| {
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
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal)?;
            let current: u64 = tx
                .query_row(
                    &format!(
                        "SELECT version FROM kv WHERE namespace = :ns AND key = :key AND {LIVE}"
                    ),
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
        })
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
        self.track(|| {
            let n = self
                .conn()
                .execute(
                    "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                    params![now],
                )
                .map_err(internal)?;
            Ok(n as u64)
        })
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

    #[test]
    fn a_full_disk_is_storage_full_once_per_episode() {
        let s = SqliteStore::in_memory().unwrap();
        let full = s.full();
        s.kv_put(write("n", "kept", "v"), None, 1).unwrap();
        // SQLite answers SQLITE_FULL when the database reaches
        // max_page_count, exactly as when the disk has no room left.
        let pages: i64 = s
            .conn()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        s.conn()
            .pragma_update(None, "max_page_count", pages + 2)
            .unwrap();
        let big = "x".repeat(64 * 1024);
        let mut refused = None;
        for i in 0..20 {
            if let Err(e) = s.kv_put(write("n", &format!("k{i}"), &big), None, 1) {
                refused = Some(e);
                break;
            }
        }
        let refused = refused.expect("the store filled up");
        assert!(matches!(refused, Error::StorageFull(_)), "{refused}");
        assert!(*full.borrow(), "the episode started");
        // Reads go on.
        assert!(s.kv_get("n", "kept", 2).unwrap().is_some());
        s.conn()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        s.kv_put(write("n", "after", "v"), None, 3).unwrap();
        assert!(!*full.borrow(), "a successful write ends the episode");
    }
}
