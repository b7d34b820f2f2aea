//! The memory engine: namespaced key-value memory and vector collections.
//!
//! Planned shape (issue #4): the store is the source of truth; each
//! collection's faiss index is derived from it, snapshotted with the last
//! applied store sequence and replayed on start-up; deletes on HNSW are
//! tombstones compacted by a background rebuild. Until it lands,
//! `agentd.v1.MemoryService` answers UNIMPLEMENTED.
