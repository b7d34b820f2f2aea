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
//! - [`points`]: Upsert (vectors or text), GetPoints, DeletePoints (by ids or
//!   filter) and Count, written durably with the labels and change sequence
//!   numbers the search index will be derived from.
//! - [`validate`]: checks and page tokens shared by the above.
//!
//! Still to come (issue #4): search. The store stays the source
//! of truth; each collection's faiss index is derived from it, snapshotted
//! with the last applied store sequence and replayed on start-up; deletes on
//! HNSW are tombstones compacted by a background rebuild. Until then Search,
//! SearchBatch, UpsertStream and CollectionStats answer UNIMPLEMENTED.

pub mod collections;
pub mod filter;
pub mod index;
pub mod kv;
pub mod points;
pub mod validate;

pub use collections::{Collection, CollectionDef, Collections, CreateParams};
pub use kv::{KvMemory, ListParams, Page, PutParams};
