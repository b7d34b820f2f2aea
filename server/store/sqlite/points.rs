//! [`PointStore`] on SQLite: the `points` table. Every write is one
//! transaction that also advances the collection's change sequence and
//! label counter, so sequence order is commit order and labels are never
//! reused.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, internal};
use crate::error::{Error, Result};
use crate::store::{
    IndexSource, LabelledVectors, PointStore, PointsWrite, StoredPoint, UpsertedPoint,
};

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from(bytes: &[u8]) -> Vec<f32> {
    floats(bytes).collect()
}

/// The floats of a stored vector's bytes.
fn floats(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Appends the `label`led vector in column `at` of `row` to `points`,
/// without a copy of its own.
fn push_stored(
    points: &mut LabelledVectors,
    label: i64,
    row: &rusqlite::Row<'_>,
    at: usize,
) -> Result<()> {
    let bytes = row
        .get_ref(at)
        .map_err(internal)?
        .as_blob()
        .map_err(|e| Error::Internal(format!("stored vector: {e}")))?;
    points.labels.push(label);
    points.data.extend(floats(bytes));
    Ok(())
}

/// A `SELECT id, vector, payload` row as a point.
fn point_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredPoint> {
    Ok(StoredPoint {
        id: row.get(0)?,
        vector: vector_from(&row.get::<_, Vec<u8>>(1)?),
        payload: row.get(2)?,
    })
}

/// What a point's row counts for in its collection's `point_bytes`: id,
/// vector and payload in bytes, plus 16 for its label and sequence (the
/// same sum as migration 0010's and [`recount`]'s).
fn point_size(p: &StoredPoint) -> i64 {
    (p.id.len() + p.vector.len() * 4 + p.payload.len() + 16) as i64
}

/// [`point_size`] in SQL, of a `points` row.
const POINT_SIZE: &str =
    "length(CAST(id AS BLOB)) + length(vector) + length(CAST(payload AS BLOB)) + 16";

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
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal)?;
            let (seq, mut label) = counters(&tx, collection)?;
            let mut outcome = Vec::with_capacity(points.len());
            let (mut added, mut added_bytes) = (0i64, 0i64);
            {
                let mut find = tx
                    .prepare_cached(&format!(
                        "SELECT label, {POINT_SIZE} FROM points WHERE collection = ?1 AND id = ?2"
                    ))
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
                    let found: Option<(i64, i64)> = find
                        .query_row(params![collection, p.id], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                        .map_err(internal)?;
                    let replaced = found.map(|(label, _)| label);
                    match found {
                        Some((_, old_size)) => added_bytes -= old_size,
                        None => added += 1,
                    }
                    added_bytes += point_size(p);
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
                "UPDATE collections SET next_seq = ?2, next_label = ?3,
                   point_count = point_count + ?4, point_bytes = point_bytes + ?5
                 WHERE name = ?1",
                params![collection, seq + 1, label, added, added_bytes],
            )
            .map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(PointsWrite {
                outcome,
                seq: seq as u64,
            })
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
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal)?;
            let (seq, _) = counters(&tx, collection)?;
            let mut deleted = Vec::new();
            let mut removed_bytes = 0i64;
            {
                let mut remove = tx
                    .prepare_cached(&format!(
                        "DELETE FROM points WHERE collection = ?1 AND id = ?2
                         RETURNING label, {POINT_SIZE}"
                    ))
                    .map_err(internal)?;
                for id in ids {
                    let gone: Option<(i64, i64)> = remove
                        .query_row(params![collection, id], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()
                        .map_err(internal)?;
                    if let Some((label, size)) = gone {
                        deleted.push(label);
                        removed_bytes += size;
                    }
                }
            }
            let seq = if deleted.is_empty() {
                seq - 1
            } else {
                tx.execute(
                    "UPDATE collections SET next_seq = ?2,
                       point_count = point_count - ?3, point_bytes = point_bytes - ?4
                     WHERE name = ?1",
                    params![collection, seq + 1, deleted.len() as i64, removed_bytes],
                )
                .map_err(internal)?;
                seq
            };
            tx.commit().map_err(internal)?;
            Ok(PointsWrite {
                outcome: deleted,
                seq: seq as u64,
            })
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
                push_stored(&mut added, row.get(0).map_err(internal)?, row, 1)?;
            }
        }
        tx.commit().map_err(internal)?;
        Ok(IndexSource {
            live,
            added,
            seq: (next_seq - 1) as u64,
        })
    }

    fn points_after(
        &self,
        collection: &str,
        after_label: i64,
        limit: usize,
    ) -> Result<(LabelledVectors, Vec<String>)> {
        // The reader: writers do not wait for it, nor it for their fsync.
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(
                "SELECT label, id, vector FROM points INDEXED BY points_by_label
                 WHERE collection = ?1 AND label > ?2 ORDER BY label LIMIT ?3",
            )
            .map_err(internal)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![collection, after_label, limit])
            .map_err(internal)?;
        let (mut points, mut ids) = (LabelledVectors::default(), Vec::new());
        while let Some(row) = rows.next().map_err(internal)? {
            push_stored(&mut points, row.get(0).map_err(internal)?, row, 2)?;
            ids.push(row.get(1).map_err(internal)?);
        }
        Ok((points, ids))
    }

    fn collection_bytes(&self, collection: &str) -> Result<u64> {
        kept(self, collection, "point_bytes")
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
        kept(self, collection, "point_count")
    }
}

/// A counter the writes keep on `collection`'s row (`point_count` or
/// `point_bytes`): 0 for a collection that does not exist.
fn kept(store: &SqliteStore, collection: &str, column: &'static str) -> Result<u64> {
    store
        .conn()
        .prepare_cached(&format!("SELECT {column} FROM collections WHERE name = ?1"))
        .and_then(|mut stmt| {
            stmt.query_row(params![collection], |row| row.get::<_, i64>(0))
                .optional()
        })
        .map(|n| n.unwrap_or(0).max(0) as u64)
        .map_err(internal)
}

/// `collection`'s point count and size counted from its rows (what the
/// kept counters must equal).
#[cfg(test)]
pub(super) fn recount(store: &SqliteStore, collection: &str) -> (u64, u64) {
    store
        .conn()
        .query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM({POINT_SIZE}), 0) FROM points WHERE collection = ?1"
            ),
            params![collection],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
        )
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CollectionStore, StoredCollection};

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
        // Chunks by label, with their ids.
        let (first, ids) = s.points_after("c", 0, 1).unwrap();
        assert_eq!(
            (first.labels.as_slice(), ids.as_slice()),
            (&[3][..], &["a".to_owned()][..])
        );
        let (rest, ids) = s.points_after("c", 3, 10).unwrap();
        assert_eq!(
            (rest.labels.as_slice(), ids.as_slice()),
            (&[4][..], &["b".to_owned()][..])
        );
        assert_eq!(rest.data, point("b", 4.0).vector);
        assert_eq!(s.points_after("c", 4, 10).unwrap().0.len(), 0);
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
    fn kept_counts_and_sizes_equal_a_recount_after_mixed_writes() {
        let s = SqliteStore::in_memory().unwrap();
        collection_row(&s, "c");
        collection_row(&s, "other");
        let with = |id: &str, payload: &str| StoredPoint {
            payload: payload.into(),
            ..point(id, 1.0)
        };
        s.upsert_points("c", &[with("a", "{}"), with("b", r#"{"k":"é—ü"}"#)])
            .unwrap();
        s.upsert_points("other", &[with("a", "{}")]).unwrap();
        // A replacement with a larger payload, a new point, the same id
        // twice in one write, deletions of present and absent ids.
        s.upsert_points(
            "c",
            &[
                with("a", r#"{"text":"longer now"}"#),
                with("c", "{}"),
                with("c", "{\"v\":2}"),
            ],
        )
        .unwrap();
        s.delete_points("c", &["b".into(), "nope".into()]).unwrap();
        s.delete_points("c", &["b".into()]).unwrap();
        for name in ["c", "other"] {
            let kept = (
                s.count_points(name).unwrap(),
                s.collection_bytes(name).unwrap(),
            );
            assert_eq!(kept, recount(&s, name), "{name}");
        }
        assert_eq!(s.count_points("c").unwrap(), 2);
        // Migration 0010's backfill counts the same as the writes kept.
        let sql = include_str!("../migrations/0010_collection_counters.sql");
        let backfill = &sql[sql.find("UPDATE collections").unwrap()..];
        s.conn()
            .execute_batch("UPDATE collections SET point_count = 0, point_bytes = 0")
            .unwrap();
        s.conn().execute_batch(backfill).unwrap();
        assert_eq!(
            (
                s.count_points("c").unwrap(),
                s.collection_bytes("c").unwrap()
            ),
            recount(&s, "c")
        );
        assert_eq!(s.count_points("no such collection").unwrap(), 0);
    }
}
