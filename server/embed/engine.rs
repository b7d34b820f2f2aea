//! The embedding engine: the configured models, their loading state, input
//! validation and the post-processing every backend shares (Matryoshka cut,
//! L2 normalisation).
//!
//! Models load in the background at start-up; until the default model is
//! ready the engine answers NotReady and reports it through
//! [`EmbeddingEngine::default_state`] (the server turns that into health).
//! CPU-heavy work (tokenizing long inputs, forward passes) runs on tokio's
//! blocking pool so the async reactor never stalls, and a semaphore bounds
//! how many requests may wait for it: beyond that the engine answers
//! Overloaded instead of queueing without bound.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use super::bert::BertEmbedder;
use super::hash::HashEmbedder;
use super::model::{Embedder, ModelInfo, ModelKind, Token};
use crate::error::{Error, FieldViolation, Result};

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
    /// Time spent waiting for a thread.
    pub queue: Duration,
    /// Time spent tokenizing and in the forward pass.
    pub compute: Duration,
}

impl EmbedOutput {
    /// Tokens read, summed over inputs.
    pub fn input_tokens(&self) -> u64 {
        self.vectors.iter().map(|v| v.tokens as u64).sum()
    }
}

struct Slot {
    id: String,
    kind: ModelKind,
    state: ModelState,
    embedder: Option<Arc<dyn Embedder>>,
}

/// The embedding engine.
pub struct EmbeddingEngine {
    slots: RwLock<Vec<Slot>>,
    default: String,
    limits: Limits,
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
    pub fn start(models: Vec<ModelSpec>, default: String, limits: Limits) -> Result<Arc<Self>> {
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
                embedder: None,
            };
            match spec.kind {
                ModelKind::Hash => {
                    let dims = spec.dimensions.unwrap_or(DEFAULT_HASH_DIMENSIONS);
                    slot.embedder = Some(Arc::new(HashEmbedder::new(spec.id.clone(), dims)));
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
            Some(path) => BertEmbedder::load(spec.id.clone(), path),
            None => Err(Error::Internal(format!("model {} has no path", spec.id))),
        };
        let (state, embedder): (ModelState, Option<Arc<dyn Embedder>>) = match result {
            Ok(model) => {
                tracing::info!(model = %spec.id, took = ?started.elapsed(), "embedding model ready");
                (ModelState::Ready, Some(Arc::new(model)))
            }
            Err(e) => {
                tracing::error!(model = %spec.id, "embedding model failed to load: {e}");
                (ModelState::Failed(e.to_string()), None)
            }
        };
        let mut slots = self.slots.write().expect("slots lock");
        if let Some(slot) = slots.iter_mut().find(|s| s.id == spec.id) {
            slot.state = state.clone();
            slot.embedder = embedder;
        }
        if spec.id == self.default {
            self.default_state.send_replace(state);
        }
    }

    /// The default model's state, updated as it loads.
    pub fn default_state(&self) -> watch::Receiver<ModelState> {
        self.default_state.subscribe()
    }

    /// The id requests without a model use.
    pub fn default_model(&self) -> &str {
        &self.default
    }

    /// Every configured model, the default first.
    pub fn models(&self) -> Vec<ModelStatus> {
        let slots = self.slots.read().expect("slots lock");
        slots
            .iter()
            .map(|s| ModelStatus {
                id: s.id.clone(),
                kind: s.kind,
                state: s.state.clone(),
                info: s.embedder.as_ref().map(|e| e.info().clone()),
                is_default: s.id == self.default,
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

    fn embedder(&self, id: &str) -> Result<Arc<dyn Embedder>> {
        let id = if id.is_empty() { &self.default } else { id };
        let slots = self.slots.read().expect("slots lock");
        let slot = slots
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::NotFound {
                kind: "embedding model",
                name: id.to_owned(),
            })?;
        match (&slot.state, &slot.embedder) {
            (ModelState::Ready, Some(e)) => Ok(Arc::clone(e)),
            (ModelState::Failed(reason), _) => Err(Error::NotReady(format!(
                "embedding model {id:?} failed to load: {reason}"
            ))),
            _ => Err(Error::NotReady(format!(
                "embedding model {id:?} is still loading"
            ))),
        }
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
        let mut violations = Vec::new();
        for (i, text) in inputs.iter().enumerate() {
            if text.is_empty() {
                violations.push(FieldViolation::new(
                    format!("{field}[{i}]"),
                    "must not be empty",
                ));
            } else if text.len() > limits.max_input_bytes {
                violations.push(FieldViolation::new(
                    format!("{field}[{i}]"),
                    format!(
                        "is {} bytes, more than the limit of {} bytes",
                        text.len(),
                        limits.max_input_bytes
                    ),
                ));
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    /// Embeds `params.inputs`.
    pub async fn embed(&self, params: EmbedParams) -> Result<EmbedOutput> {
        self.check_inputs("inputs", &params.inputs)?;
        let embedder = self.embedder(&params.model)?;
        let info = embedder.info().clone();
        if let Some(d) = params.dimensions {
            check_dimensions(&info, d)?;
        }
        let _permit = self.permits.try_acquire().map_err(|_| {
            Error::Overloaded(format!(
                "more than {} embedding requests in flight; retry later",
                self.limits.max_concurrent_requests
            ))
        })?;

        let submitted = Instant::now();
        let truncate = params.truncate;
        let inputs = params.inputs;
        let (queue, compute, raw) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let queue = started.duration_since(submitted);
            let encoded = inputs
                .iter()
                .map(|t| embedder.encode(t))
                .collect::<Result<Vec<_>>>()?;
            if !truncate {
                let max = embedder.info().max_input_tokens;
                let violations: Vec<_> = encoded
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.truncated())
                    .map(|(i, e)| {
                        FieldViolation::new(
                            format!("inputs[{i}]"),
                            format!(
                                "has {} tokens, more than the model's limit of {max}; \
                                 set truncate to cut it",
                                e.full_len
                            ),
                        )
                    })
                    .collect();
                if !violations.is_empty() {
                    return Err(Error::InvalidArgument(violations));
                }
            }
            let refs: Vec<_> = encoded.iter().collect();
            let vectors = embedder.embed(&refs)?;
            let out: Vec<_> = encoded
                .iter()
                .zip(vectors)
                .map(|(e, v)| (v, e.ids.len(), e.truncated()))
                .collect();
            Ok::<_, Error>((queue, started.elapsed(), out))
        })
        .await
        .map_err(|e| Error::Internal(format!("embedding task failed: {e}")))??;

        let vectors = raw
            .into_iter()
            .map(|(mut values, tokens, truncated)| {
                if let Some(d) = params.dimensions {
                    values.truncate(d);
                }
                if params.normalize {
                    l2_normalize(&mut values);
                }
                Vector {
                    values,
                    tokens,
                    truncated,
                    cached: false,
                }
            })
            .collect();
        Ok(EmbedOutput {
            model: info.id,
            vectors,
            queue,
            compute,
        })
    }

    /// The tokens of each input.
    pub async fn tokenize(
        &self,
        model: &str,
        inputs: Vec<String>,
        add_special_tokens: bool,
    ) -> Result<(ModelInfo, Vec<Vec<Token>>)> {
        self.check_inputs("inputs", &inputs)?;
        let embedder = self.embedder(model)?;
        let info = embedder.info().clone();
        let tokens = tokio::task::spawn_blocking(move || {
            inputs
                .iter()
                .map(|t| embedder.tokens(t, add_special_tokens))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("tokenize task failed: {e}")))??;
        Ok((info, tokens))
    }
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

/// Scales `v` to length 1 (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
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
        };
        EmbeddingEngine::start(vec![spec], "hash".into(), limits()).unwrap()
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
        };
        let engine = EmbeddingEngine::start(
            vec![spec],
            "hash".into(),
            Limits {
                max_inputs: 4,
                max_input_bytes: 1 << 20,
                max_concurrent_requests: 8,
            },
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
            },
            ModelSpec {
                id: "hash".into(),
                kind: ModelKind::Hash,
                path: None,
                dimensions: None,
            },
        ];
        let engine = EmbeddingEngine::start(specs, "bert".into(), limits()).unwrap();
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
