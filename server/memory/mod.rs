//! The memory engine: namespaced key-value memory and vector collections.
//!
//! - [`kv`]: key-value memory with TTLs, compare-and-set and paged listing,
//!   on the store's [`crate::store::KvStore`].
//!
//! Vector collections (issue #4, still to come): the store is the source of
//! truth; each collection's faiss index is derived from it, snapshotted with
//! the last applied store sequence and replayed on start-up; deletes on HNSW
//! are tombstones compacted by a background rebuild. Until they land, the
//! collection RPCs answer UNIMPLEMENTED.

pub mod kv;

pub use kv::{KvMemory, ListParams, Page, PutParams};
