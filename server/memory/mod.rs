//! The memory engine: namespaced key-value memory and vector collections.
//!
//! - [`kv`]: key-value memory with TTLs, compare-and-set and paged listing,
//!   on the store's [`crate::store::KvStore`].
//! - [`collections`]: vector collection definitions (metric, faiss index
//!   structure, quantization, embedding model), defaults resolved and checked
//!   against faiss, on the store's [`crate::store::CollectionStore`].
//! - [`filter`]: payload filters (eq, in, range, exists, all/any/none of),
//!   validated once and evaluated per point, for Search, Count and
//!   DeletePoints.
//! - [`points`]: Upsert (vectors or text, with optional near-duplicate
//!   merging), GetPoints, DeletePoints (by ids or filter), Count, Search and
//!   CollectionStats, written durably with the labels and change sequence
//!   numbers the search indexes are derived from.
//! - [`index`]: one collection's faiss index (tombstones for deletes,
//!   training once there are enough points).
//! - [`indexes`]: every collection's index, kept in step with the store
//!   under a per-collection lock, rebuilt in the background, snapshotted.
//! - [`snapshot`]: crash-safe index snapshot files.
//! - [`id_table`], [`live_filter`], [`faiss_threads`], [`heap`]: the
//!   index's compact label → id table, faiss searches that skip tombstones,
//!   OpenMP thread counts per call, and returning freed memory after loads.
//! - [`search_job`]: the index part of a Search, run on the async worker
//!   when it is predicted short, on the blocking pool otherwise.
//! - [`search_cache`]: recent search results until the next write.
//! - [`validate`]: checks and page tokens shared by the above.
//!
//! The store stays the source of truth: an index can always be rebuilt
//! from it, and a snapshot only saves the time to do so.

pub mod collections;
pub mod faiss_threads;
pub mod filter;
pub mod heap;
pub mod id_table;
pub mod index;
pub mod indexes;
pub mod kv;
pub mod live_filter;
pub mod points;
pub mod search_cache;
pub mod search_job;
pub mod snapshot;
pub mod validate;

pub use collections::{Collection, CollectionDef, Collections, CreateParams};
pub use kv::{KvMemory, ListParams, Page, PutParams};
