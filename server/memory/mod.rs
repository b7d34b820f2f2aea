//! The memory engine: namespaced key-value memory and vector collections.
//!
//! - [`kv`]: key-value memory with TTLs, compare-and-set and paged listing,
//!   on the store's `KvStore`.
//! - [`collections`]: vector collection definitions (metric, faiss index
//!   structure, quantization, embedding model), defaults resolved and checked
//!   against faiss, on the store's `CollectionStore`.
//! - [`filter`]: payload filters (eq, in, range, exists, all/any/none of),
//!   validated once and evaluated per point, for Search, Count and
//!   DeletePoints.
//! - [`points`]: Upsert (vectors or text, with optional near-duplicate
//!   merging), GetPoints, DeletePoints (by ids or filter), Count, Search,
//!   SearchBatch and CollectionStats, written durably with the labels and
//!   change sequence numbers the search indexes are derived from.
//! - [`index`]: one collection's faiss index (tombstones for deletes,
//!   training once there are enough points).
//! - [`index_memory`]: what an index takes per point, and the limit that
//!   refuses a collection too large for memory.
//! - [`indexes`]: every collection's index, kept in step with the store
//!   under a per-collection read/write lock (searches in parallel), merged
//!   and rebuilt in the background, snapshotted.
//! - [`fresh`], [`segments`]: points committed but not yet in the graph,
//!   searched exactly alongside it, so writes never wait for the graph.
//! - [`snapshot`]: crash-safe index snapshot files.
//! - [`id_table`], [`live_filter`], [`hnsw_insert`], [`faiss_threads`],
//!   [`heap`]: the index's compact label → id table, faiss searches that
//!   skip tombstones, small inserts into a large HNSW graph without faiss's
//!   per-call setup, OpenMP thread counts per call, and returning freed
//!   memory after loads.
//! - [`search_job`], [`search_pool`]: the index part of a Search, run on
//!   the async worker when it is predicted short, otherwise on one search
//!   thread per core in arrival order (a long one on the blocking pool).
//! - [`search_cache`]: recent search results until the next write.
//! - [`validate`]: the naming rule of namespaces and collections.
//! - [`settings`]: `[memory]` of agentd.toml.
//!
//! The store stays the source of truth: an index can always be rebuilt
//! from it, and a snapshot only saves the time to do so.

pub(crate) mod collections;
pub(crate) mod faiss_threads;
pub(crate) mod filter;
pub(crate) mod fresh;
pub(crate) mod heap;
pub(crate) mod hnsw_insert;
pub(crate) mod id_table;
pub(crate) mod index;
pub(crate) mod index_memory;
pub(crate) mod indexes;
pub(crate) mod kv;
pub(crate) mod live_filter;
pub(crate) mod points;
pub(crate) mod search_cache;
pub(crate) mod search_job;
pub(crate) mod search_pool;
pub(crate) mod segments;
pub(crate) mod settings;
pub(crate) mod snapshot;
pub(crate) mod validate;

pub(crate) use collections::{
    Collection, CollectionDef, Collections, CreateParams, IndexSpec, Metric, Quantization,
};
pub(crate) use filter::{Condition, Filter, Range};
pub(crate) use indexes::Indexes;
pub(crate) use kv::{Entry, KvMemory, ListParams, PutParams};
/// Searches that skip tombstones, for the benchmark that times raw faiss
/// the same way agentd searches it.
pub use live_filter::{LivePositions, Tuning, search_live};
pub(crate) use points::{
    CollectionStats, Deleted, Hit, Include, Point, PointData, PointInput, Points, Query,
    SearchParams, SearchResult, Selector, UpsertOutcome, UpsertStatus, Upserted,
};
pub(crate) use search_cache::SearchCache;
pub use settings::MemoryConfig;
pub(crate) use settings::MemoryFile;
pub(crate) use validate::check_name;
