//! The embedding engine: the configured models, their loading state, input
//! validation, the cache, and the post-processing every backend shares
//! (Matryoshka cut, L2 normalisation).
//!
//! A request goes: validate → look up each text in the model's cache →
//! tokenize the misses → hand them to the model's batcher, which shares
//! forward passes between concurrent requests → cache the new vectors (only
//! once the whole request succeeded) → cut and normalise.
//!
//! Models load in the background at start-up; until the default model is
//! ready the engine answers NotReady and reports it through
//! [`EmbeddingEngine::default_state`] (the server turns that into health).
//! CPU-heavy work (tokenizing long inputs, forward passes) runs on tokio's
//! blocking pool so the async reactor never stalls, and a semaphore bounds
//! how many requests may be in flight: beyond that the engine answers
//! Overloaded instead of queueing without bound.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use tracing::Instrument;

use super::batcher::{BatchLimits, Batcher};
use super::bert::{BertBackend, BertEmbedder};
use super::cache::{Cached, EmbeddingCache};
use super::hash::HashEmbedder;
use super::model::{Embedder, Encoded, ModelInfo, ModelKind, Token};
use crate::common::blocking;
use crate::common::sync::{read, write};
use crate::common::timing::Timing;
use crate::common::vector::l2_normalize;
use crate::error::{Error, Result, Violations};

/// One model to serve.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Id used in requests.
    pub id: String,
    /// Backend.
    pub kind: ModelKind,
    /// Model directory (bert).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Vector length (hash); default 384.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Forward-pass code (bert): "blas" (default) or "candle".
    #[serde(default)]
    pub backend: BertBackend,
}

/// Request limits, from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Most bytes in one input.
    pub max_input_bytes: usize,
    /// Most requests admitted at once (running or waiting for a thread).
    pub max_concurrent_requests: usize,
}

/// Whether a model can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Weights are loading.
    Loading,
    /// Serving.
    Ready,
    /// Loading failed, with the reason.
    Failed(String),
}

impl ModelState {
    /// Ok when the model `id` can serve; otherwise the one error every
    /// caller gives: NotReady, saying whether it is loading or failed.
    pub fn ready(&self, id: &str) -> Result<()> {
        match self {
            ModelState::Ready => Ok(()),
            ModelState::Loading => Err(Error::NotReady(format!(
                "embedding model {id:?} is still loading"
            ))),
            ModelState::Failed(reason) => Err(Error::NotReady(format!(
                "embedding model {id:?} failed to load: {reason}"
            ))),
        }
    }
}

/// A model as ListModels reports it.
#[derive(Debug, Clone)]
pub struct ModelStatus {
    /// Id.
    pub id: String,
    /// Backend.
    pub kind: ModelKind,
    /// Loading state.
    pub state: ModelState,
    /// Facts about the model, once loaded.
    pub info: Option<ModelInfo>,
    /// Whether requests without a model use it.
    pub is_default: bool,
    /// Cache hits since start.
    pub cache_hits: u64,
    /// Cache misses since start.
    pub cache_misses: u64,
}

/// An Embed call, in domain terms.
#[derive(Debug, Clone)]
pub struct EmbedParams {
    /// Model id; empty means the default.
    pub model: String,
    /// Texts.
    pub inputs: Vec<String>,
    /// L2-normalise the vectors.
    pub normalize: bool,
    /// Cut over-long inputs instead of refusing them.
    pub truncate: bool,
    /// Keep only this many leading components.
    pub dimensions: Option<usize>,
}

/// The vector of one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    /// Components.
    pub values: Vec<f32>,
    /// Tokens after truncation.
    pub tokens: usize,
    /// Whether the input was cut.
    pub truncated: bool,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// The result of an Embed call.
#[derive(Debug, Clone)]
pub struct EmbedOutput {
    /// The model that computed it.
    pub model: String,
    /// One vector per input.
    pub vectors: Vec<Vector>,
    /// Waiting for the batcher, then the forward pass (zero when every
    /// input came from the cache).
    pub timing: Timing,
}

/// The tokens of a Tokenize call.
#[derive(Debug, Clone)]
pub struct Tokenized {
    /// The model that tokenized.
    pub model: ModelInfo,
    /// The tokens of each input, untruncated.
    pub texts: Vec<Vec<Token>>,
}

impl EmbedOutput {
    /// Tokens read, summed over inputs.
    pub fn input_tokens(&self) -> u64 {
        self.vectors.iter().map(|v| v.tokens as u64).sum()
    }
}

/// A loaded model with its batcher and cache.
#[derive(Debug)]
struct Loaded {
    embedder: Arc<dyn Embedder>,
    batcher: Batcher,
    cache: EmbeddingCache,
}

struct Slot {
    id: String,
    kind: ModelKind,
    state: ModelState,
    loaded: Option<Arc<Loaded>>,
}

/// How the engine batches and caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Batch size bounds.
    pub batch: BatchLimits,
    /// Cache size per model in bytes; 0 disables the cache.
    pub cache_bytes: u64,
}

/// Inputs whose text adds up to more than this are tokenized on the blocking
/// pool rather than on the async reactor.
const INLINE_TOKENIZE_BYTES: usize = 16 * 1024;

/// The embedding engine.
pub struct EmbeddingEngine {
    slots: RwLock<Vec<Slot>>,
    default: String,
    limits: Limits,
    tuning: Tuning,
    permits: Semaphore,
    default_state: watch::Sender<ModelState>,
}

impl std::fmt::Debug for EmbeddingEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingEngine")
            .field("default", &self.default)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Default vector length of hash models.
pub const DEFAULT_HASH_DIMENSIONS: usize = 384;

impl EmbeddingEngine {
    /// Registers `models` (the default one is `default`, which must be among
    /// them) and starts loading them in the background. Hash models are ready
    /// at once.
    pub fn start(
        models: Vec<ModelSpec>,
        default: String,
        limits: Limits,
        tuning: Tuning,
    ) -> Result<Arc<Self>> {
        if !models.iter().any(|m| m.id == default) {
            return Err(Error::Internal(format!(
                "default embedding model {default:?} is not configured"
            )));
        }
        let mut slots = Vec::new();
        let mut to_load = Vec::new();
        for spec in models {
            let mut slot = Slot {
                id: spec.id.clone(),
                kind: spec.kind,
                state: ModelState::Loading,
                loaded: None,
            };
            match spec.kind {
                ModelKind::Hash => {
                    let dims = spec.dimensions.unwrap_or(DEFAULT_HASH_DIMENSIONS);
                    let embedder = Arc::new(HashEmbedder::new(spec.id.clone(), dims));
                    slot.loaded = Some(Arc::new(Loaded::new(embedder, tuning)));
                    slot.state = ModelState::Ready;
                }
                ModelKind::Bert => to_load.push(spec),
            }
            slots.push(slot);
        }
        // The default model is listed first.
        slots.sort_by_key(|s| s.id != default);
        let initial = slots[0].state.clone();
        let (default_state, _) = watch::channel(initial);
        let engine = Arc::new(Self {
            slots: RwLock::new(slots),
            default,
            limits,
            tuning,
            permits: Semaphore::new(limits.max_concurrent_requests),
            default_state,
        });
        for spec in to_load {
            let engine = Arc::clone(&engine);
            tokio::task::spawn_blocking(move || engine.load_bert(spec));
        }
        Ok(engine)
    }

    fn load_bert(&self, spec: ModelSpec) {
        let started = Instant::now();
        let result = match &spec.path {
            Some(path) => BertEmbedder::load(spec.id.clone(), path, spec.backend),
            None => Err(Error::Internal(format!("model {} has no path", spec.id))),
        };
        let (state, loaded) = match result {
            Ok(model) => {
                tracing::info!(model = %spec.id, took = ?started.elapsed(), "embedding model ready");
                let loaded = Loaded::new(Arc::new(model), self.tuning);
                (ModelState::Ready, Some(Arc::new(loaded)))
            }
            Err(e) => {
                tracing::error!(model = %spec.id, "embedding model failed to load: {e}");
                (ModelState::Failed(e.to_string()), None)
            }
        };
        let mut slots = write(&self.slots);
        if let Some(slot) = slots.iter_mut().find(|s| s.id == spec.id) {
            slot.state = state.clone();
            slot.loaded = loaded;
        }
        if spec.id == self.default {
            self.default_state.send_replace(state);
        }
    }

    /// The default model's state, updated as it loads.
    pub fn default_state(&self) -> watch::Receiver<ModelState> {
        self.default_state.subscribe()
    }

    /// Every configured model, the default first.
    pub fn models(&self) -> Vec<ModelStatus> {
        let slots = read(&self.slots);
        slots
            .iter()
            .map(|s| {
                let (cache_hits, cache_misses) =
                    s.loaded.as_ref().map_or((0, 0), |l| l.cache.stats());
                ModelStatus {
                    id: s.id.clone(),
                    kind: s.kind,
                    state: s.state.clone(),
                    info: s.loaded.as_ref().map(|l| l.embedder.info().clone()),
                    is_default: s.id == self.default,
                    cache_hits,
                    cache_misses,
                }
            })
            .collect()
    }

    /// One model; empty `id` means the default.
    pub fn model(&self, id: &str) -> Result<ModelStatus> {
        let id = if id.is_empty() { &self.default } else { id };
        self.models()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| Error::NotFound {
                kind: "embedding model",
                name: id.to_owned(),
            })
    }

    fn loaded(&self, id: &str) -> Result<Arc<Loaded>> {
        let id = if id.is_empty() { &self.default } else { id };
        let slots = read(&self.slots);
        let slot = slots
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::NotFound {
                kind: "embedding model",
                name: id.to_owned(),
            })?;
        slot.state.ready(id)?;
        slot.loaded.clone().ok_or_else(|| {
            Error::Internal(format!("embedding model {id:?} is ready but not loaded"))
        })
    }

    fn check_inputs(&self, field: &str, inputs: &[String]) -> Result<()> {
        let limits = self.limits;
        if inputs.is_empty() || inputs.len() > limits.max_inputs {
            return Err(Error::invalid(
                field,
                format!(
                    "must hold 1 to {} texts, got {}",
                    limits.max_inputs,
                    inputs.len()
                ),
            ));
        }
        let mut v = Violations::new();
        for (i, text) in inputs.iter().enumerate() {
            if text.is_empty() {
                v.add(format!("{field}[{i}]"), "must not be empty");
            } else if text.len() > limits.max_input_bytes {
                v.add(
                    format!("{field}[{i}]"),
                    format!(
                        "is {} bytes, more than the limit of {} bytes",
                        text.len(),
                        limits.max_input_bytes
                    ),
                );
            }
        }
        v.finish()
    }

    /// Embeds `params.inputs`.
    pub async fn embed(&self, params: EmbedParams) -> Result<EmbedOutput> {
        self.check_inputs("inputs", &params.inputs)?;
        let model = self.loaded(&params.model)?;
        let info = model.embedder.info().clone();
        if let Some(d) = params.dimensions {
            check_dimensions(&info, d)?;
        }
        let _permit = self.permits.try_acquire().map_err(|_| {
            Error::Overloaded(format!(
                "more than {} embedding requests in flight; retry later",
                self.limits.max_concurrent_requests
            ))
        })?;

        let hits: Vec<Option<Arc<Cached>>> =
            params.inputs.iter().map(|t| model.cache.get(t)).collect();
        let misses: Vec<usize> = (0..hits.len()).filter(|&i| hits[i].is_none()).collect();
        let encoded = self.encode(&model, &params.inputs, &misses).await?;
        if !params.truncate {
            refuse_truncated(
                &params.inputs,
                &hits,
                &misses,
                &encoded,
                info.max_input_tokens,
            )?;
        }
        let lengths: Vec<(usize, usize)> =
            encoded.iter().map(|e| (e.ids.len(), e.full_len)).collect();
        let (fresh, queue, compute) = if encoded.is_empty() {
            (Vec::new(), Duration::ZERO, Duration::ZERO)
        } else {
            // A child of the call's span in traces: the wait for a forward
            // pass and the pass itself (shared with other requests).
            let span = tracing::info_span!(
                "embedding.batch",
                model = %info.id,
                texts = encoded.len(),
                queue_ms = tracing::field::Empty,
                compute_ms = tracing::field::Empty,
                batch_requests = tracing::field::Empty,
            );
            let batched = model
                .batcher
                .embed(encoded)
                .instrument(span.clone())
                .await?;
            span.record("queue_ms", batched.queue.as_secs_f64() * 1e3);
            span.record("compute_ms", batched.compute.as_secs_f64() * 1e3);
            span.record("batch_requests", batched.batch_requests);
            tracing::debug!(
                model = %info.id,
                texts = batched.vectors.len(),
                shared_with = batched.batch_requests - 1,
                queue = ?batched.queue,
                compute = ?batched.compute,
                "forward pass"
            );
            (batched.vectors, batched.queue, batched.compute)
        };

        // The whole request succeeded: only now may the cache learn from it.
        let mut fresh = fresh.into_iter().zip(lengths);
        let mut vectors = Vec::with_capacity(hits.len());
        for (text, hit) in params.inputs.iter().zip(hits) {
            let (raw, tokens, full_len, cached) = match hit {
                Some(c) => (c.vector.clone(), c.tokens, c.full_len, true),
                None => {
                    let (raw, (tokens, full_len)) = fresh.next().expect("one vector per miss");
                    model.cache.insert(
                        text,
                        Cached {
                            vector: raw.clone(),
                            tokens,
                            full_len,
                        },
                    );
                    (raw, tokens, full_len, false)
                }
            };
            let mut values = raw;
            if let Some(d) = params.dimensions {
                values.truncate(d);
            }
            if params.normalize {
                // A zero vector (possible only for the hash model on text
                // without words) stays zero.
                l2_normalize(&mut values);
            }
            vectors.push(Vector {
                values,
                tokens,
                truncated: full_len > tokens,
                cached,
            });
        }
        Ok(EmbedOutput {
            model: info.id,
            vectors,
            timing: Timing { queue, compute },
        })
    }

    /// Tokenizes the inputs at `indices`: inline when they are short, on the
    /// blocking pool when tokenizing them could stall the reactor.
    async fn encode(
        &self,
        model: &Arc<Loaded>,
        inputs: &[String],
        indices: &[usize],
    ) -> Result<Vec<Encoded>> {
        let bytes: usize = indices.iter().map(|&i| inputs[i].len()).sum();
        if bytes <= INLINE_TOKENIZE_BYTES {
            return indices
                .iter()
                .map(|&i| model.embedder.encode(&inputs[i]))
                .collect();
        }
        let texts: Vec<String> = indices.iter().map(|&i| inputs[i].clone()).collect();
        let embedder = Arc::clone(&model.embedder);
        blocking::run("tokenizing", move || {
            texts.iter().map(|t| embedder.encode(t)).collect()
        })
        .await
    }

    /// The tokens of each input.
    pub async fn tokenize(
        &self,
        model: &str,
        inputs: Vec<String>,
        add_special_tokens: bool,
    ) -> Result<Tokenized> {
        self.check_inputs("inputs", &inputs)?;
        let embedder = Arc::clone(&self.loaded(model)?.embedder);
        let info = embedder.info().clone();
        let texts = blocking::run("tokenizing", move || {
            inputs
                .iter()
                .map(|t| embedder.tokens(t, add_special_tokens))
                .collect::<Result<Vec<_>>>()
        })
        .await?;
        Ok(Tokenized { model: info, texts })
    }
}

impl Loaded {
    fn new(embedder: Arc<dyn Embedder>, tuning: Tuning) -> Self {
        Self {
            batcher: Batcher::start(Arc::clone(&embedder), tuning.batch),
            cache: EmbeddingCache::new(tuning.cache_bytes),
            embedder,
        }
    }
}

/// With `truncate = false`, every over-long input is an error, whether it
/// came from the cache or was just tokenized.
fn refuse_truncated(
    inputs: &[String],
    hits: &[Option<Arc<Cached>>],
    misses: &[usize],
    encoded: &[Encoded],
    max: usize,
) -> Result<()> {
    let mut full_len = vec![0; inputs.len()];
    for (i, hit) in hits.iter().enumerate() {
        if let Some(c) = hit {
            full_len[i] = c.full_len;
        }
    }
    for (&i, e) in misses.iter().zip(encoded) {
        full_len[i] = e.full_len;
    }
    let mut v = Violations::new();
    for (i, n) in full_len.iter().enumerate().filter(|(_, n)| **n > max) {
        v.add(
            format!("inputs[{i}]"),
            format!("has {n} tokens, more than the model's limit of {max}; set truncate to cut it"),
        );
    }
    v.finish()
}

/// Refuses a `dimensions` the model was not trained to be cut to.
fn check_dimensions(info: &ModelInfo, d: usize) -> Result<()> {
    if d == info.dimensions || info.matryoshka_dimensions.contains(&d) {
        return Ok(());
    }
    let allowed = if info.matryoshka_dimensions.is_empty() {
        format!(
            "model {} supports only its full {} dimensions",
            info.id, info.dimensions
        )
    } else {
        format!(
            "model {} supports {:?} or its full {}",
            info.id, info.matryoshka_dimensions, info.dimensions
        )
    };
    Err(Error::invalid(
        "dimensions",
        format!("{d} not allowed: {allowed}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_inputs: 4,
            max_input_bytes: 32,
            max_concurrent_requests: 8,
        }
    }

    fn hash_engine() -> Arc<EmbeddingEngine> {
        let spec = ModelSpec {
            id: "hash".into(),
            kind: ModelKind::Hash,
            path: None,
            dimensions: Some(64),
            backend: Default::default(),
        };
        EmbeddingEngine::start(vec![spec], "hash".into(), limits(), tuning()).unwrap()
    }

    fn tuning() -> Tuning {
        Tuning {
            batch: super::super::batcher::DEFAULT_BATCH_LIMITS,
            cache_bytes: 1 << 20,
        }
    }

    fn params(inputs: &[&str]) -> EmbedParams {
        EmbedParams {
            model: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            normalize: true,
            truncate: true,
            dimensions: None,
        }
    }

    #[tokio::test]
    async fn embeds_with_the_default_model_and_normalises() {
        let engine = hash_engine();
        let out = engine.embed(params(&["hello world", "bye"])).await.unwrap();
        assert_eq!(out.model, "hash");
        assert_eq!(out.vectors.len(), 2);
        for v in &out.vectors {
            assert_eq!(v.values.len(), 64);
            let norm: f32 = v.values.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        }
        assert_eq!(out.vectors[0].tokens, 2);
        assert_eq!(out.input_tokens(), 3);
    }

    #[tokio::test]
    async fn repeats_come_from_the_cache_and_failures_leave_nothing() {
        let engine = hash_engine();
        let first = engine.embed(params(&["alpha", "beta"])).await.unwrap();
        assert!(first.vectors.iter().all(|v| !v.cached));
        let second = engine.embed(params(&["beta", "gamma"])).await.unwrap();
        assert!(second.vectors[0].cached && !second.vectors[1].cached);
        assert_eq!(first.vectors[1].values, second.vectors[0].values);

        // An invalid request (dimensions) fails before caching anything.
        let mut bad = params(&["delta"]);
        bad.dimensions = Some(7);
        assert!(engine.embed(bad).await.is_err());
        let third = engine.embed(params(&["delta"])).await.unwrap();
        assert!(
            !third.vectors[0].cached,
            "a failed request must not fill the cache"
        );
        let status = engine.model("").unwrap();
        assert_eq!((status.cache_hits, status.cache_misses), (1, 4));
    }

    #[tokio::test]
    async fn bad_inputs_name_the_field_and_the_limit() {
        let engine = hash_engine();
        let err = engine.embed(params(&[])).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("inputs: must hold 1 to 4 texts, got 0"),
            "{err}"
        );
        let err = engine.embed(params(&["a"; 5])).await.unwrap_err();
        assert!(err.to_string().contains("got 5"), "{err}");
        let long = "x".repeat(33);
        let err = engine.embed(params(&["ok", "", &long])).await.unwrap_err();
        let Error::InvalidArgument(v) = err else {
            panic!("{err}")
        };
        assert_eq!(v[0].field, "inputs[1]");
        assert_eq!(v[1].field, "inputs[2]");
        assert!(
            v[1].description.contains("limit of 32 bytes"),
            "{}",
            v[1].description
        );
    }

    #[tokio::test]
    async fn unknown_model_and_unsupported_dimensions_are_refused() {
        let engine = hash_engine();
        let mut p = params(&["a"]);
        p.model = "nope".into();
        assert!(matches!(engine.embed(p).await, Err(Error::NotFound { .. })));
        let mut p = params(&["a"]);
        p.dimensions = Some(32);
        let err = engine.embed(p).await.unwrap_err();
        assert!(
            err.to_string().contains("dimensions: 32 not allowed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncate_false_refuses_over_long_inputs() {
        let spec = ModelSpec {
            id: "hash".into(),
            kind: ModelKind::Hash,
            path: None,
            dimensions: None,
            backend: Default::default(),
        };
        let engine = EmbeddingEngine::start(
            vec![spec],
            "hash".into(),
            Limits {
                max_inputs: 4,
                max_input_bytes: 1 << 20,
                max_concurrent_requests: 8,
            },
            tuning(),
        )
        .unwrap();
        let long = "w ".repeat(super::super::hash::MAX_WORDS + 1);
        let mut p = params(&[&long]);
        p.truncate = false;
        let err = engine.embed(p).await.unwrap_err();
        assert!(
            err.to_string().contains("inputs[0]: has 8193 tokens"),
            "{err}"
        );
        let out = engine.embed(params(&[&long])).await.unwrap();
        assert!(out.vectors[0].truncated);
    }

    #[tokio::test]
    async fn a_missing_model_directory_fails_the_model_not_the_server() {
        let specs = vec![
            ModelSpec {
                id: "bert".into(),
                kind: ModelKind::Bert,
                path: Some("/nonexistent/model".into()),
                dimensions: None,
                backend: Default::default(),
            },
            ModelSpec {
                id: "hash".into(),
                kind: ModelKind::Hash,
                path: None,
                dimensions: None,
                backend: Default::default(),
            },
        ];
        let engine = EmbeddingEngine::start(specs, "bert".into(), limits(), tuning()).unwrap();
        let mut state = engine.default_state();
        let state = state
            .wait_for(|s| *s != ModelState::Loading)
            .await
            .unwrap()
            .clone();
        assert!(
            matches!(state, ModelState::Failed(ref r) if r.contains("config.json")),
            "{state:?}"
        );
        let err = engine.embed(params(&["a"])).await.unwrap_err();
        assert!(matches!(err, Error::NotReady(_)), "{err}");
        let mut p = params(&["a"]);
        p.model = "hash".into();
        assert!(engine.embed(p).await.is_ok());
    }
}
