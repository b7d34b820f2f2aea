//! What the engine knows about a model, and the trait every backend
//! implements.

use std::sync::Arc;

use crate::error::Result;

/// The family of code that computes a model's embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A BERT-family transformer run by candle, mean-pooled.
    Bert,
    /// Feature hashing of words and character n-grams; no weights.
    Hash,
}

/// Static facts about a loaded model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Id used in requests.
    pub id: String,
    /// Backend family.
    pub kind: ModelKind,
    /// Length of the vectors it produces.
    pub dimensions: usize,
    /// Longest input in tokens, special tokens included.
    pub max_input_tokens: usize,
    /// Prefix lengths the model was trained to support (Matryoshka); empty
    /// when cutting vectors would ruin them.
    pub matryoshka_dimensions: Vec<usize>,
}

/// One input after tokenization, ready for a forward pass.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Token ids after truncation, special tokens included.
    pub ids: Vec<u32>,
    /// Token count before truncation.
    pub full_len: usize,
    /// The text, for backends that work on characters (hash).
    pub text: Arc<str>,
}

impl Encoded {}

/// One token, for the Tokenize RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Vocabulary id.
    pub id: u32,
    /// The token as the vocabulary spells it.
    pub text: String,
    /// Added by the tokenizer ([CLS], [SEP]).
    pub special: bool,
    /// Byte offset where it starts in the input.
    pub start: usize,
    /// Byte offset just past its end.
    pub end: usize,
}

/// A model that turns text into vectors.
///
/// `encode` runs on the request path (cheap, per input); `embed` runs one
/// forward pass over a batch and is CPU-heavy, so callers run it on a
/// blocking thread. Splitting the two lets the engine validate lengths before
/// any compute and lets a batcher pack inputs of several requests into one
/// pass.
pub trait Embedder: Send + Sync + std::fmt::Debug + 'static {
    /// Static facts about the model.
    fn info(&self) -> &ModelInfo;

    /// Tokenizes `text`, truncating to `max_input_tokens` and recording the
    /// length before truncation.
    fn encode(&self, text: &str) -> Result<Encoded>;

    /// The pooled, not normalised, vector of each input, in order.
    fn embed(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>>;

    /// The tokens of `text`, untruncated, for the Tokenize RPC.
    fn tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<Token>>;
}
