//! The collectors `/metrics` runs before rendering: each reads figures an
//! engine already keeps (no engine records these itself) into gauges and
//! counters. Wiring, not an engine: it is the one place that knows every
//! engine and the metric catalog both.

use std::sync::Arc;

use crate::agents::AgentEngine;
use crate::embed::EmbeddingEngine;
use crate::memory::Indexes;
use crate::metrics::{Collector, catalog};
use crate::query::QueryEngine;

/// Embedding cache hits and misses per model.
pub fn embedding(engine: Arc<EmbeddingEngine>) -> Collector {
    Box::new(move || {
        let engine = Arc::clone(&engine);
        Box::pin(async move {
            for model in engine.models() {
                for (result, count) in [("hit", model.cache_hits), ("miss", model.cache_misses)] {
                    metrics::counter!(catalog::EMBEDDING_CACHE, "model" => model.id.clone(), "result" => result)
                        .absolute(count);
                }
            }
        })
    })
}

/// Points, index memory and snapshot age per loaded collection.
pub fn memory(indexes: Indexes) -> Collector {
    Box::new(move || {
        let indexes = indexes.clone();
        Box::pin(async move {
            let figures = tokio::task::spawn_blocking(move || indexes.figures())
                .await
                .unwrap_or_default();
            for f in figures {
                let collection = || f.collection.clone();
                metrics::gauge!(catalog::MEMORY_POINTS, "collection" => collection(), "segment" => "graph")
                    .set(f.indexed_points as f64);
                metrics::gauge!(catalog::MEMORY_POINTS, "collection" => collection(), "segment" => "fresh")
                    .set(f.fresh_points as f64);
                metrics::gauge!(catalog::MEMORY_INDEX_BYTES, "collection" => collection())
                    .set(f.memory_bytes as f64);
                metrics::gauge!(catalog::MEMORY_SNAPSHOT_AGE, "collection" => collection())
                    .set(f.snapshot_age.as_secs_f64());
            }
        })
    })
}

/// Queries by state, queries started, result cache lookups.
pub fn query(engine: QueryEngine) -> Collector {
    Box::new(move || {
        let s = engine.stats();
        Box::pin(async move {
            for (state, n) in [
                ("running", s.running),
                ("paused", s.paused),
                ("awaiting_tools", s.awaiting_tools),
            ] {
                metrics::gauge!(catalog::QUERY_SESSIONS, "state" => state).set(n as f64);
            }
            metrics::counter!(catalog::QUERY_STARTED).absolute(s.started);
            for (cache, result, n) in [
                ("exact", "hit", s.exact_hits),
                ("exact", "miss", s.exact_misses),
                ("semantic", "hit", s.semantic_hits),
                ("semantic", "miss", s.semantic_misses),
            ] {
                metrics::counter!(catalog::QUERY_CACHE, "cache" => cache, "result" => result)
                    .absolute(n);
            }
        })
    })
}

/// Agents and tasks by state, the ready queue.
pub fn agents(engine: AgentEngine) -> Collector {
    Box::new(move || {
        let engine = engine.clone();
        Box::pin(async move {
            let stats = match engine.stats(None).await {
                Ok(stats) => stats,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: reading the agents' figures");
                    return;
                }
            };
            for (state, n) in &stats.agents_by_state {
                metrics::gauge!(catalog::AGENTS, "state" => state.clone()).set(*n as f64);
            }
            for (state, n) in &stats.tasks_by_state {
                metrics::gauge!(catalog::TASKS, "state" => state.clone()).set(*n as f64);
            }
            metrics::gauge!(catalog::TASK_QUEUE_DEPTH).set(stats.queue_depth as f64);
        })
    })
}
