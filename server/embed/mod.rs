//! The embedding engine: turns text into vectors.
//!
//! - [`model`]: the [`Embedder`] trait every backend implements and the facts
//!   a model reports about itself.
//! - [`bert`]: BERT-family models with candle (all-MiniLM-L6-v2 by default),
//!   mean pooling as sentence-transformers does.
//! - [`hash`]: feature hashing, no weights: the zero-setup fallback.
//! - [`engine`]: the configured models, their loading state, validation,
//!   normalisation and the bound on requests in flight.

pub mod bert;
pub mod engine;
pub mod hash;
pub mod model;

pub use engine::{
    EmbedOutput, EmbedParams, EmbeddingEngine, Limits, ModelSpec, ModelState, ModelStatus, Vector,
};
pub use model::{Embedder, ModelInfo, ModelKind, Token};
