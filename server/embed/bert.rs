//! BERT-family sentence embeddings with candle, as sentence-transformers
//! computes them: token embeddings from the transformer, mean-pooled over the
//! attention mask (padding excluded). Normalisation is left to the engine.
//!
//! Two backends run the forward pass: [`BertBackend::Blas`] (the default:
//! OpenBLAS GEMMs over unpadded tokens, see [`super::blas`]) and
//! [`BertBackend::Candle`] (candle-transformers' `BertModel`, kept as the
//! reference and for checkpoints the BLAS path does not cover). Both load the
//! weights through candle and are checked against sentence-transformers.
//!
//! A model directory holds `config.json`, `model.safetensors` and
//! `tokenizer.json`, and optionally sentence-transformers'
//! `sentence_bert_config.json`, whose `max_seq_length` (256 for
//! all-MiniLM-L6-v2) wins over the tokenizer's own truncation (128 in that
//! package) and the model's position limit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::blas::{BlasBert, Shape};
use super::model::{Embedder, Encoded, ModelInfo, ModelKind, Token};
use crate::error::{Error, Result};

/// Which code runs a BERT model's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BertBackend {
    /// OpenBLAS GEMMs over unpadded tokens: the fastest on CPU.
    #[default]
    Blas,
    /// candle-transformers' BertModel.
    Candle,
}

enum Forward {
    Candle(BertModel),
    Blas(BlasBert),
}

/// A loaded BERT model and its tokenizer.
pub struct BertEmbedder {
    info: ModelInfo,
    model: Forward,
    /// Never truncates: tells how long an input really is, and serves
    /// Tokenize.
    tokenizer: Tokenizer,
    /// Truncates to `max_input_tokens` the way the model's tokenizer would
    /// (special tokens kept); used only for over-long inputs.
    truncating: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("info", &self.info)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn internal(context: &str, path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{context} {}: {err}", path.display()))
}

impl BertEmbedder {
    /// Loads the model in `dir` under the name `id`. Slow (hundreds of
    /// milliseconds): call it on a blocking thread.
    pub fn load(id: impl Into<String>, dir: &Path, backend: BertBackend) -> Result<Self> {
        let file = |name: &str| -> PathBuf { dir.join(name) };
        let config_path = file("config.json");
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| internal("reading", &config_path, e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| internal("parsing", &config_path, e))?;
        let hidden: HiddenSize =
            serde_json::from_str(&config_text).map_err(|e| internal("parsing", &config_path, e))?;

        let st_path = file("sentence_bert_config.json");
        let st_max = match std::fs::read_to_string(&st_path) {
            Ok(text) => {
                serde_json::from_str::<SentenceBertConfig>(&text)
                    .map_err(|e| internal("parsing", &st_path, e))?
                    .max_seq_length
            }
            Err(_) => None,
        };
        let max_tokens = st_max
            .unwrap_or(hidden.max_position_embeddings)
            .min(hidden.max_position_embeddings);

        let tokenizer_path = file("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| internal("loading", &tokenizer_path, e))?;
        // Padding is done per batch by `embed`; truncation is ours too, so
        // `encode` can tell how long the input really was.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| internal("configuring", &tokenizer_path, e))?;
        let mut truncating = tokenizer.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| internal("configuring", &tokenizer_path, e))?;

        let weights = file("model.safetensors");
        let device = Device::Cpu;
        // SAFETY: the weights file is memory-mapped read-only; agentd never
        // writes it, and the model directory must not be modified while the
        // server runs (documented in the README), as with any mmap loader.
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| internal("mapping", &weights, e))?;
        let blas_ok = hidden.hidden_act.as_deref().is_none_or(|a| a == "gelu")
            && hidden
                .position_embedding_type
                .as_deref()
                .is_none_or(|p| p == "absolute");
        let model = match backend {
            BertBackend::Blas if blas_ok => {
                let shape = Shape {
                    hidden: hidden.hidden_size,
                    heads: hidden.num_attention_heads,
                    layers: hidden.num_hidden_layers,
                    intermediate: hidden.intermediate_size,
                    max_positions: hidden.max_position_embeddings,
                    eps: hidden.layer_norm_eps.unwrap_or(1e-12) as f32,
                };
                Forward::Blas(BlasBert::load(vb, shape)?)
            }
            _ => {
                if backend == BertBackend::Blas {
                    tracing::info!(dir = %dir.display(), "activation or position type not covered by the BLAS backend; using candle");
                }
                Forward::Candle(
                    BertModel::load(vb, &config).map_err(|e| internal("loading", &weights, e))?,
                )
            }
        };

        Ok(Self {
            info: ModelInfo {
                id: id.into(),
                kind: ModelKind::Bert,
                dimensions: hidden.hidden_size,
                max_input_tokens: max_tokens,
                matryoshka_dimensions: Vec::new(),
            },
            model,
            tokenizer,
            truncating,
            device,
        })
    }

    fn forward_candle(
        &self,
        model: &BertModel,
        batch: &[&Encoded],
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let longest = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let n = batch.len();
        let mut ids = Vec::with_capacity(n * longest);
        let mut mask = Vec::with_capacity(n * longest);
        for e in batch {
            ids.extend_from_slice(&e.ids);
            ids.extend(std::iter::repeat_n(0u32, longest - e.ids.len()));
            mask.extend(std::iter::repeat_n(1u32, e.ids.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - e.ids.len()));
        }
        let ids = Tensor::from_vec(ids, (n, longest), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, longest), &self.device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = model.forward(&ids, &type_ids, Some(&mask))?;
        // Mean over real tokens: sum(hidden * mask) / sum(mask).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        summed.broadcast_div(&counts)?.to_vec2::<f32>()
    }
}

/// The fields of config.json this module reads itself.
#[derive(serde::Deserialize)]
struct HiddenSize {
    hidden_size: usize,
    max_position_embeddings: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
}

impl Embedder for BertEmbedder {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn encode(&self, text: &str) -> Result<Encoded> {
        let mut encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Internal(format!("tokenizing: {e}")))?;
        let full_len = encoding.len();
        if full_len > self.info.max_input_tokens {
            encoding = self
                .truncating
                .encode(text, true)
                .map_err(|e| Error::Internal(format!("tokenizing: {e}")))?;
        }
        Ok(Encoded {
            ids: encoding.get_ids().to_vec(),
            full_len,
            text: Arc::from(text),
        })
    }

    fn embed(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        match &self.model {
            Forward::Blas(model) => model.forward(batch),
            Forward::Candle(model) => self
                .forward_candle(model, batch)
                .map_err(|e| Error::Internal(format!("forward pass of {}: {e}", self.info.id))),
        }
    }

    fn tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<Token>> {
        let encoding = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Internal(format!("tokenizing: {e}")))?;
        let special = encoding.get_special_tokens_mask();
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .zip(encoding.get_offsets())
            .zip(special)
            .map(|(((&id, text), &(start, end)), &special)| Token {
                id,
                text: text.clone(),
                special: special == 1,
                start,
                end,
            })
            .collect())
    }
}
