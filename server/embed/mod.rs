//! The embedding engine: turns text into vectors.
//!
//! Planned shape (issue #3): an `Embedder` trait with a candle BERT backend
//! (all-MiniLM-L6-v2 by default) and a weight-free hash backend, a dynamic
//! batcher that gathers concurrent requests into one forward pass on a
//! blocking pool, and a (model, text) cache. Until it lands,
//! `agentd.v1.EmbeddingService` answers UNIMPLEMENTED.
