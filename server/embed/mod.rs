//! The embedding engine: turns text into vectors.
//!
//! - [`model`]: the `Embedder` trait every backend implements and the facts
//!   a model reports about itself.
//! - [`bert`]: BERT-family models with candle (all-MiniLM-L6-v2 by default),
//!   mean pooling as sentence-transformers does.
//! - [`blas`]: the BERT forward pass on OpenBLAS, the default bert backend.
//! - [`hash`]: feature hashing, no weights: the zero-setup fallback.
//! - [`batcher`]: gathers concurrent requests into shared forward passes.
//! - [`cache`]: answers repeated (model, text) pairs without a forward pass.
//! - [`engine`]: the configured models, their loading state, validation,
//!   normalisation and the bound on requests in flight.
//! - [`text`]: the `TextEmbedder` trait through which the other engines
//!   embed text.
//! - [`settings`]: `[embedding]` of agentd.toml.

pub(crate) mod batcher;
pub(crate) mod bert;
pub(crate) mod blas;
pub(crate) mod cache;
pub(crate) mod engine;
pub(crate) mod hash;
pub(crate) mod model;
pub(crate) mod settings;
pub(crate) mod text;

pub use batcher::{BatchLimits, DEFAULT_BATCH_LIMITS};
pub use bert::BertBackend;
pub(crate) use engine::{
    EmbedOutput, EmbedParams, EmbeddingEngine, ModelState, ModelStatus, Tokenized, Vector,
};
pub use engine::{Limits, ModelSpec, Tuning};
pub use model::ModelKind;
pub(crate) use model::Token;
pub(crate) use settings::EmbeddingFile;
pub use settings::{
    DEFAULT_EMBEDDING_LIMITS, DEFAULT_EMBEDDING_TUNING, DEFAULT_HASH_ID, DEFAULT_MINILM_DIR,
    DEFAULT_MINILM_ID, EmbeddingConfig,
};
pub(crate) use text::TextEmbedder;
