//! The limits of point requests, and the checks that enforce them. Field
//! paths are relative to the request (`points[3].vector`, `ids[0]`).

use super::super::collections::{CollectionDef, IndexSpec};
use super::types::{Query, SearchParams};
use crate::error::{Error, Violations};

/// Most points in one request.
pub const MAX_POINTS: usize = 10_000;
/// Longest point id.
pub const MAX_ID_BYTES: usize = 512;
/// Largest payload, as JSON.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most results of one search.
pub const MAX_K: usize = 1000;
/// Largest `ef_search` a search may ask for.
pub const MAX_EF_SEARCH: u32 = 4096;
/// Most candidates ranked per result when rescoring.
pub const MAX_OVERSAMPLING: u32 = 16;
/// Candidates ranked per result when a rescoring search names none.
pub const DEFAULT_OVERSAMPLING: u32 = 4;
/// Most searches in one SearchBatch.
pub const MAX_BATCH_SEARCHES: usize = 256;

/// A point id: 1 to [`MAX_ID_BYTES`] bytes.
pub fn check_id(field: String, id: &str, v: &mut Violations) {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        v.add(
            field,
            format!("must be 1 to {MAX_ID_BYTES} bytes, got {}", id.len()),
        );
    }
}

/// A list of 1 to [`MAX_POINTS`] point ids.
pub fn check_ids(field: &str, ids: &[String], v: &mut Violations) {
    if ids.is_empty() || ids.len() > MAX_POINTS {
        v.add(
            field,
            format!("must hold 1 to {MAX_POINTS} ids, got {}", ids.len()),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        check_id(format!("{field}[{i}]"), id, v);
    }
}

/// A vector of the collection's dimensions, every component finite.
pub fn check_vector(def: &CollectionDef, field: &str, vector: &[f32], v: &mut Violations) {
    if vector.len() != def.dimensions as usize {
        v.add(
            field,
            format!(
                "has {} components; collection {:?} has {} dimensions",
                vector.len(),
                def.name,
                def.dimensions
            ),
        );
    } else if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        v.add(
            field,
            format!("component {i} is {}, not a finite number", vector[i]),
        );
    }
}

/// Every field of a search on `def`.
pub fn check_search(def: &CollectionDef, p: &SearchParams) -> Result<(), Error> {
    let mut v = Violations::new();
    if p.k == 0 || p.k > MAX_K {
        v.add("k", format!("must be 1 to {MAX_K}, got {}", p.k));
    }
    if let Some(ef) = p.ef_search
        && !(1..=MAX_EF_SEARCH).contains(&ef)
    {
        v.add(
            "ef_search",
            format!("must be 1 to {MAX_EF_SEARCH}, got {ef}"),
        );
    }
    if let Some(nprobe) = p.nprobe {
        let nlist = match def.index {
            IndexSpec::Ivf { nlist, .. } => nlist,
            _ => 0,
        };
        if nlist == 0 || !(1..=nlist).contains(&nprobe) {
            v.add(
                "nprobe",
                format!(
                    "must be 1 to nlist ({nlist}) on an IVF collection, got {nprobe}; \
                     {:?} is {}",
                    def.name,
                    def.factory()
                ),
            );
        }
    }
    if let Some(o) = p.oversampling
        && !(1..=MAX_OVERSAMPLING).contains(&o)
    {
        v.add(
            "oversampling",
            format!("must be 1 to {MAX_OVERSAMPLING}, got {o}"),
        );
    }
    if let Some(filter) = &p.filter {
        filter.validate("filter", &mut v);
    }
    if let Some(t) = p.score_threshold
        && !t.is_finite()
    {
        v.add(
            "score_threshold",
            format!("must be a finite number, got {t}"),
        );
    }
    match &p.query {
        Some(Query::Vector(vector)) => check_vector(def, "vector", vector, &mut v),
        Some(Query::Text(text)) => {
            if def.embedding_model.is_none() || text.is_empty() {
                v.add(
                    "text",
                    format!(
                        "needs a non-empty text and a collection with an embedding_model; \
                         {:?} has {}",
                        def.name,
                        def.embedding_model.as_deref().unwrap_or("none")
                    ),
                );
            }
        }
        None => v.add("query", "set vector or text"),
    }
    v.finish()
}
