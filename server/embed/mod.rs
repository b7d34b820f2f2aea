//! The embedding engine: turns text into vectors.
//!
//! - [`model`]: the [`Embedder`] trait every backend implements and the facts
//!   a model reports about itself.
//! - [`bert`]: BERT-family models with candle (all-MiniLM-L6-v2 by default),
//!   mean pooling as sentence-transformers does.
//! - [`blas`]: the BERT forward pass on OpenBLAS, the default bert backend.
//! - [`hash`]: feature hashing, no weights: the zero-setup fallback.
//! - [`batcher`]: gathers concurrent requests into shared forward passes.
//! - [`cache`]: answers repeated (model, text) pairs without a forward pass.
//! - [`engine`]: the configured models, their loading state, validation,
//!   normalisation and the bound on requests in flight.

pub mod batcher;
pub mod bert;
pub mod blas;
pub mod cache;
pub mod engine;
pub mod hash;
pub mod model;

pub use batcher::{BatchLimits, DEFAULT_BATCH_LIMITS};
pub use bert::BertBackend;
pub use engine::{
    EmbedOutput, EmbedParams, EmbeddingEngine, Limits, ModelSpec, ModelState, ModelStatus, Tuning,
    Vector,
};
pub use model::{Embedder, ModelInfo, ModelKind, Token};
