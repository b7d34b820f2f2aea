//! Search and SearchBatch: validation, the search result cache, embedding
//! of text queries, then the index search itself
//! ([`super::super::search_job`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::collections::{CollectionDef, Metric, Quantization};
use super::super::search_cache::{QueryKey, SearchKey};
use super::super::search_job::IndexSearch;
use super::Points;
use super::types::{Include, Query, SearchParams, SearchResult};
use super::validate::{DEFAULT_OVERSAMPLING, MAX_BATCH_SEARCHES, check_search};
use tracing::Instrument;

use crate::common::timing::Timing;
use crate::common::vector::l2_normalize;
use crate::error::{Error, Result};

impl Points {
    /// The `k` nearest points to the query, best first; with a filter, the
    /// `k` nearest among those whose payload matches (never fewer when at
    /// least `k` match).
    pub async fn search(&self, p: SearchParams) -> Result<SearchResult> {
        let started = Instant::now();
        let collection = self.collections.resolve(p.collection.clone()).await?;
        let def = &collection.def;
        check_search(def, &p)?;
        let query_key = match &p.query {
            Some(Query::Vector(vector)) => {
                QueryKey::Vector(vector.iter().map(|x| x.to_bits()).collect())
            }
            Some(Query::Text(text)) => QueryKey::Text(text.clone()),
            None => unreachable!("check_search refuses a search without a query"),
        };

        let slot = self.indexes.slot(&collection);
        let rescore = rescoring(def, &p);
        let key = SearchKey {
            collection: def.name.clone(),
            created_at: collection.created_at,
            generation: slot.generation(),
            query: query_key,
            k: p.k,
            filter: p.filter.as_ref().map(|f| format!("{f:?}")),
            ef_search: p.ef_search,
            nprobe: p.nprobe,
            threshold: p.score_threshold.map(f32::to_bits),
            rescore,
            with_payload: p.with_payload,
            with_vector: p.with_vector,
        };
        if let Some(cached) = self.cache.get(&key) {
            slot.cache_hits.fetch_add(1, Ordering::Relaxed);
            slot.record_search(started.elapsed());
            return Ok(SearchResult {
                hits: cached.hits.clone(),
                cached: true,
                timing: Timing {
                    queue: std::time::Duration::ZERO,
                    compute: started.elapsed(),
                },
            });
        }
        if self.cache.enabled() {
            slot.cache_misses.fetch_add(1, Ordering::Relaxed);
        }

        let mut query = match p.query {
            Some(Query::Text(text)) => {
                let model = def.embedding_model.clone().unwrap_or_default();
                self.embedder()?
                    .embed_texts(&model, vec![text])
                    .await
                    // The one text embedded is the request's `text`.
                    .map_err(|e| match e {
                        Error::InvalidArgument(v) => Error::InvalidArgument(
                            v.into_iter()
                                .map(|f| crate::error::FieldViolation::new("text", f.description))
                                .collect(),
                        ),
                        other => other,
                    })?
                    .remove(0)
            }
            Some(Query::Vector(vector)) => vector,
            None => unreachable!("check_search refuses a search without a query"),
        };
        if def.metric == Metric::Cosine && !l2_normalize(&mut query) {
            return Err(Error::invalid(
                "vector",
                "a zero vector has no direction, so no cosine similarity",
            ));
        }

        let job = IndexSearch {
            collection: def.name.clone(),
            query,
            k: p.k,
            filter: p.filter,
            ef_search: p.ef_search,
            nprobe: p.nprobe,
            score_threshold: p.score_threshold,
            rescore,
            metric: def.metric,
            include: Include {
                payload: p.with_payload,
                vector: p.with_vector,
            },
        };
        let span = tracing::info_span!(
            "memory.search",
            collection = %def.name,
            k = p.k,
            queue_ms = tracing::field::Empty,
        );
        let searched = job
            .run(&self.indexes, Arc::clone(&slot), def)
            .instrument(span.clone())
            .await?;
        span.record("queue_ms", searched.queued.as_secs_f64() * 1e3);
        let hits = searched.found.hits.clone();
        self.cache.insert(key, searched.found);
        slot.record_search(started.elapsed());
        Ok(SearchResult {
            hits,
            cached: false,
            timing: Timing {
                queue: searched.queued,
                compute: started.elapsed().saturating_sub(searched.queued),
            },
        })
    }

    /// Several searches on one collection, answered in order and run in
    /// parallel up to the core count (searches of one collection share its
    /// index for reading). Each search's `collection` must be empty or
    /// `collection`; an invalid search fails the whole batch, naming it
    /// (`searches[2].k`): the first failing one in the batch's order.
    pub async fn search_batch(
        &self,
        collection: String,
        mut searches: Vec<SearchParams>,
    ) -> Result<Vec<SearchResult>> {
        use futures::StreamExt;

        if searches.is_empty() || searches.len() > MAX_BATCH_SEARCHES {
            return Err(Error::invalid(
                "searches",
                format!(
                    "must hold 1 to {MAX_BATCH_SEARCHES} searches, got {}",
                    searches.len()
                ),
            ));
        }
        // Every search checked before any runs, so the first invalid one in
        // the batch's order is the one named.
        let resolved = self
            .collections
            .resolve(collection.clone())
            .await
            .map_err(|e| e.within("searches[0]"))?;
        for (i, search) in searches.iter_mut().enumerate() {
            let within = |e: Error| e.within(&format!("searches[{i}]"));
            if search.collection.is_empty() {
                search.collection.clone_from(&collection);
            } else if search.collection != collection {
                return Err(within(Error::invalid(
                    "collection",
                    format!("must be empty or {collection:?}"),
                )));
            }
            check_search(&resolved.def, search).map_err(within)?;
        }
        let parallel = std::thread::available_parallelism().map_or(1, usize::from);
        let mut answers = futures::stream::iter(searches.into_iter().enumerate())
            .map(|(i, search)| async move {
                self.search(search)
                    .await
                    .map_err(|e| e.within(&format!("searches[{i}]")))
            })
            .buffered(parallel);
        let mut results = Vec::new();
        while let Some(answer) = answers.next().await {
            results.push(answer?);
        }
        Ok(results)
    }
}

/// Candidates ranked per result by their full vectors, for a search of a
/// quantized collection that asks for rescoring; None otherwise.
fn rescoring(def: &CollectionDef, p: &SearchParams) -> Option<usize> {
    (def.quantization != Quantization::None && p.rescore == Some(true))
        .then(|| p.oversampling.unwrap_or(DEFAULT_OVERSAMPLING) as usize)
}
