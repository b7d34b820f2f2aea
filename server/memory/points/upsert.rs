//! Upsert: validation, embedding of text points, cosine normalisation, and
//! near-duplicate merging, committed as one store transaction under the
//! collection's lock.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::super::collections::{CollectionDef, Metric};
use super::super::index_memory::check_room;
use super::super::indexes::{Change, Written};
use super::super::segments::Segments;
use super::types::{PointData, PointInput, UpsertOutcome, UpsertStatus, Upserted};
use super::validate::{MAX_PAYLOAD_BYTES, MAX_POINTS, check_id, check_vector};
use super::{Points, payload_of};
use crate::common::vector::l2_normalize;
use crate::error::{Error, FieldViolation, Result, Violations};
use crate::store::{PointStore, StoredPoint, UpsertedPoint};

impl Points {
    /// Inserts or replaces `points` in `collection`, all or nothing.
    ///
    /// In a collection with a `dedup_threshold`, a point whose id is new and
    /// whose nearest stored neighbour is at least that similar (cosine or
    /// dot score; `1 / (1 + squared distance)` for L2) is merged into that
    /// neighbour instead of being added: the neighbour keeps its id and
    /// vector, and its payload takes the new point's fields on top of its
    /// own (a shallow merge: new keys are added, existing keys overwritten).
    /// Points are compared with what was stored before the request, not with
    /// each other.
    pub async fn upsert(
        &self,
        collection: String,
        points: Vec<PointInput>,
    ) -> Result<UpsertOutcome> {
        let collection = self.collections.resolve(collection).await?;
        let def = &collection.def;
        let mut v = Violations::new();
        if points.is_empty() || points.len() > MAX_POINTS {
            v.add(
                "points",
                format!("must hold 1 to {MAX_POINTS} points, got {}", points.len()),
            );
        }
        let mut seen = HashSet::new();
        let mut texts = Vec::new();
        let mut stored = Vec::with_capacity(points.len());
        for (i, p) in points.into_iter().enumerate() {
            let id = if p.id.is_empty() {
                ulid::Ulid::new().to_string()
            } else {
                check_id(format!("points[{i}].id"), &p.id, &mut v);
                p.id
            };
            if !seen.insert(id.clone()) {
                v.add(
                    format!("points[{i}].id"),
                    format!("{id:?} appears more than once in this request"),
                );
            }
            let payload = Value::Object(p.payload).to_string();
            if payload.len() > MAX_PAYLOAD_BYTES {
                v.add(
                    format!("points[{i}].payload"),
                    format!(
                        "is {} bytes as JSON, more than {MAX_PAYLOAD_BYTES}",
                        payload.len()
                    ),
                );
            }
            let vector = match p.data {
                Some(PointData::Vector(vector)) => {
                    check_vector(def, &format!("points[{i}].vector"), &vector, &mut v);
                    vector
                }
                Some(PointData::Text(text)) => {
                    if def.embedding_model.is_none() {
                        v.add(
                            format!("points[{i}].text"),
                            format!(
                                "collection {:?} has no embedding_model; send vectors",
                                def.name
                            ),
                        );
                    } else if text.is_empty() {
                        v.add(format!("points[{i}].text"), "must not be empty");
                    }
                    texts.push((stored.len(), text));
                    Vec::new()
                }
                None => {
                    v.add(format!("points[{i}]"), "needs a vector or a text");
                    Vec::new()
                }
            };
            stored.push(StoredPoint {
                id,
                vector,
                payload,
            });
        }
        v.finish()?;

        if !texts.is_empty() {
            let model = def.embedding_model.clone().unwrap_or_default();
            let (at, texts): (Vec<usize>, Vec<String>) = texts.into_iter().unzip();
            let vectors = self
                .embedder()?
                .embed_texts(&model, texts)
                .await
                .map_err(|e| texts_as_points(e, &at))?;
            for (i, vector) in at.into_iter().zip(vectors) {
                stored[i].vector = vector;
            }
        }
        if def.metric == Metric::Cosine {
            for (i, p) in stored.iter_mut().enumerate() {
                if !l2_normalize(&mut p.vector) {
                    return Err(Error::invalid(
                        format!("points[{i}].vector"),
                        "a zero vector has no direction, so no cosine similarity",
                    ));
                }
            }
        }
        let name = def.name.clone();
        let dedup = def.dedup_threshold;
        let (limit, def) = (self.max_index_bytes, def.clone());
        self.with_slot(&collection, move |indexes, slot| {
            indexes.write(slot, dedup.is_some(), move |s, index| {
                // In the collection's writer turn: no other write can slip
                // between the duplicate check (or the count) and the commit.
                let ids: Vec<String> = stored.iter().map(|p| p.id.clone()).collect();
                check_memory(s, &def, &ids, limit)?;
                let (rows, placed) = match (dedup, index) {
                    (Some(threshold), Some(index)) => {
                        merge_duplicates(s, &name, index, threshold, stored)?
                    }
                    _ => {
                        let placed = (0..stored.len()).map(Placed::Row).collect();
                        (stored, placed)
                    }
                };
                let write = s.upsert_points(&name, &rows)?;
                let mut change = Change {
                    killed: write.outcome.iter().filter_map(|u| u.replaced).collect(),
                    ..Change::default()
                };
                for (u, p) in write.outcome.iter().zip(&rows) {
                    change.added.push(u.label, &p.vector);
                    change.ids.push(p.id.clone());
                }
                Ok(Written {
                    value: UpsertOutcome {
                        results: outcomes(&ids, &write.outcome, placed),
                        sequence: write.seq,
                    },
                    seq: write.seq,
                    change,
                })
            })
        })
        .await
    }
}

/// Refuses the write when the collection's index would pass `limit` bytes
/// with `ids` in it. Replaced points do not grow it, so when all-new would
/// pass, the ids already stored are counted before refusing.
fn check_memory(s: &dyn PointStore, def: &CollectionDef, ids: &[String], limit: u64) -> Result<()> {
    let count = s.count_points(&def.name)?;
    let all_new = count + ids.len() as u64;
    if check_room(def, all_new, limit).is_ok() {
        return Ok(());
    }
    let existing = s.get_points(&def.name, ids)?.len() as u64;
    check_room(def, all_new - existing, limit)
}

/// An embedding error about `inputs[j]` (the j-th text) as one about the
/// point it came from, `points[at[j]].text`.
fn texts_as_points(err: Error, at: &[usize]) -> Error {
    let Error::InvalidArgument(violations) = err else {
        return err;
    };
    let point_of = |field: &str| {
        let j = field.strip_prefix("inputs[")?.split_once(']')?.0;
        at.get(j.parse::<usize>().ok()?).copied()
    };
    Error::InvalidArgument(
        violations
            .into_iter()
            .map(|v| match point_of(&v.field) {
                Some(i) => FieldViolation::new(format!("points[{i}].text"), v.description),
                None => FieldViolation::new("points", v.description),
            })
            .collect(),
    )
}

/// Where one input point of an upsert went.
#[derive(Debug, Clone, PartialEq)]
enum Placed {
    /// Written as this row.
    Row(usize),
    /// Merged into the stored point with this id.
    Merged(String),
}

/// Plans a dedup upsert: the rows to write (ids unique) and where each input
/// went. See [`Points::upsert`] for the rule.
fn merge_duplicates(
    s: &dyn PointStore,
    collection: &str,
    index: Segments<'_>,
    threshold: f32,
    inputs: Vec<StoredPoint>,
) -> Result<(Vec<StoredPoint>, Vec<Placed>)> {
    let ids: Vec<String> = inputs.iter().map(|p| p.id.clone()).collect();
    let existing: HashSet<String> = s
        .get_points(collection, &ids)?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let metric = index.metric();
    let mut rows: Vec<StoredPoint> = Vec::with_capacity(inputs.len());
    let mut row_of: HashMap<String, usize> = HashMap::new();
    let mut placed = Vec::with_capacity(inputs.len());
    for point in inputs {
        let twin = if existing.contains(&point.id) {
            None
        } else {
            index
                .search(&point.vector, 1, None, None)?
                .first()
                .copied()
                .filter(|(_, score)| similarity(metric, *score) >= threshold)
        };
        let Some((label, _)) = twin else {
            // An explicit write replaces whatever this request planned for
            // the id so far.
            let r = match row_of.get(&point.id) {
                Some(&r) => {
                    rows[r] = point;
                    r
                }
                None => {
                    row_of.insert(point.id.clone(), rows.len());
                    rows.push(point);
                    rows.len() - 1
                }
            };
            placed.push(Placed::Row(r));
            continue;
        };
        let Some((_, target)) = s.points_by_labels(collection, &[label])?.pop() else {
            return Err(Error::Internal(format!(
                "index label {label} of {collection:?} has no stored point"
            )));
        };
        let r = match row_of.get(&target.id) {
            Some(&r) => r,
            None => {
                row_of.insert(target.id.clone(), rows.len());
                rows.push(target);
                rows.len() - 1
            }
        };
        let mut merged = payload_of(&rows[r].payload)?;
        merged.extend(payload_of(&point.payload)?);
        let merged = Value::Object(merged).to_string();
        if merged.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::invalid(
                format!("points[{}].payload", placed.len()),
                format!(
                    "merged into near-duplicate {:?}, the payload would be {} bytes as JSON, \
                     more than {MAX_PAYLOAD_BYTES}",
                    rows[r].id,
                    merged.len()
                ),
            ));
        }
        rows[r].payload = merged;
        placed.push(Placed::Merged(rows[r].id.clone()));
    }
    Ok((rows, placed))
}

/// Similarity of a faiss score, for dedup thresholds in (0, 1].
fn similarity(metric: Metric, score: f32) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => score,
        Metric::L2 => 1.0 / (1.0 + score),
    }
}

/// Each input's outcome from the plan and the store's per-row outcome.
fn outcomes(inputs: &[String], written: &[UpsertedPoint], placed: Vec<Placed>) -> Vec<Upserted> {
    inputs
        .iter()
        .zip(placed)
        .map(|(id, place)| Upserted {
            id: id.clone(),
            status: match place {
                Placed::Merged(into) => UpsertStatus::Merged(into),
                Placed::Row(r) if written[r].replaced.is_some() => UpsertStatus::Updated,
                Placed::Row(_) => UpsertStatus::Created,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_errors_name_the_point_of_the_text() {
        let err = Error::InvalidArgument(vec![
            FieldViolation::new("inputs[1]", "is too long"),
            FieldViolation::new("inputs", "too many"),
        ]);
        let Error::InvalidArgument(v) = texts_as_points(err, &[0, 4]) else {
            panic!("still invalid")
        };
        assert_eq!(v[0].field, "points[4].text");
        assert_eq!(v[1].field, "points");
    }
}
