//! `[embedding]` of agentd.toml and the `--embedding-model-dir` flag: which
//! models the embedding engine serves, its request limits, batching and
//! cache.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::batcher::{BatchLimits, DEFAULT_BATCH_LIMITS};
use super::engine::{DEFAULT_HASH_DIMENSIONS, Limits, ModelSpec, Tuning};
use super::model::ModelKind;

/// Where `scripts/fetch-models` puts all-MiniLM-L6-v2; served by default
/// when present.
pub const DEFAULT_MINILM_DIR: &str = "models/all-MiniLM-L6-v2";
/// Id of the default BERT model.
pub const DEFAULT_MINILM_ID: &str = "all-MiniLM-L6-v2";
/// Id of the always-available hash model.
pub const DEFAULT_HASH_ID: &str = "hash";

/// `[embedding]` of agentd.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingFile {
    default_model: Option<String>,
    max_inputs: Option<usize>,
    max_input_bytes: Option<usize>,
    max_concurrent_requests: Option<usize>,
    max_batch_tokens: Option<usize>,
    max_batch_requests: Option<usize>,
    cache_bytes: Option<u64>,
    /// `[[embedding.models]]`; when given, replaces the built-in list.
    models: Option<Vec<ModelSpec>>,
}

/// The embedding engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingConfig {
    /// Models to serve.
    pub models: Vec<ModelSpec>,
    /// Id used when a request names no model.
    pub default_model: String,
    /// Request limits.
    pub limits: Limits,
    /// Batching and caching.
    pub tuning: Tuning,
}

/// Default batching and caching: TEI-like batch bounds, 64 MiB of cache per
/// model (about 40,000 short texts of a 384-dimension model).
pub const DEFAULT_EMBEDDING_TUNING: Tuning = Tuning {
    batch: DEFAULT_BATCH_LIMITS,
    cache_bytes: 64 * 1024 * 1024,
};

/// Default request limits of the embedding engine.
pub const DEFAULT_EMBEDDING_LIMITS: Limits = Limits {
    max_inputs: 256,
    max_input_bytes: 64 * 1024,
    max_concurrent_requests: 512,
};

impl Default for EmbeddingConfig {
    /// all-MiniLM-L6-v2 from `models/` when it has been fetched, and the hash
    /// embedder always; the default is MiniLM when present.
    fn default() -> Self {
        let mut models = Vec::new();
        if Path::new(DEFAULT_MINILM_DIR).join("config.json").exists() {
            models.push(ModelSpec {
                id: DEFAULT_MINILM_ID.to_owned(),
                kind: ModelKind::Bert,
                path: Some(PathBuf::from(DEFAULT_MINILM_DIR)),
                dimensions: None,
                backend: Default::default(),
            });
        }
        models.push(hash_spec());
        let default_model = models[0].id.clone();
        Self {
            models,
            default_model,
            limits: DEFAULT_EMBEDDING_LIMITS,
            tuning: DEFAULT_EMBEDDING_TUNING,
        }
    }
}

fn hash_spec() -> ModelSpec {
    ModelSpec {
        id: DEFAULT_HASH_ID.to_owned(),
        kind: ModelKind::Hash,
        path: None,
        dimensions: Some(DEFAULT_HASH_DIMENSIONS),
        backend: Default::default(),
    }
}

impl EmbeddingConfig {
    /// The file's values over the built-in list and limits, with the
    /// `--embedding-model-dir` flag's model first and default when given;
    /// validated.
    pub fn merge(model_dir: Option<&Path>, file: EmbeddingFile) -> anyhow::Result<Self> {
        let builtin = EmbeddingConfig::default();
        let explicit_models = file.models.is_some();
        let mut models = file.models.unwrap_or(builtin.models);
        let mut default_model = file.default_model;
        if let Some(dir) = model_dir {
            let id = dir
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.is_empty())
                .with_context(|| {
                    format!("--embedding-model-dir {} has no usable name", dir.display())
                })?
                .to_owned();
            models.retain(|m| m.id != id);
            models.insert(
                0,
                ModelSpec {
                    id: id.clone(),
                    kind: ModelKind::Bert,
                    path: Some(dir.to_path_buf()),
                    dimensions: None,
                    backend: Default::default(),
                },
            );
            default_model = Some(id);
        }
        if !explicit_models && !models.iter().any(|m| m.kind == ModelKind::Hash) {
            models.push(hash_spec());
        }
        let default_model = match default_model {
            Some(id) => id,
            None => models
                .first()
                .map(|m| m.id.clone())
                .context("[embedding] models must not be empty")?,
        };
        let d = DEFAULT_EMBEDDING_LIMITS;
        let config = EmbeddingConfig {
            models,
            default_model,
            limits: Limits {
                max_inputs: file.max_inputs.unwrap_or(d.max_inputs),
                max_input_bytes: file.max_input_bytes.unwrap_or(d.max_input_bytes),
                max_concurrent_requests: file
                    .max_concurrent_requests
                    .unwrap_or(d.max_concurrent_requests),
            },
            tuning: Tuning {
                batch: BatchLimits {
                    max_batch_tokens: file
                        .max_batch_tokens
                        .unwrap_or(DEFAULT_BATCH_LIMITS.max_batch_tokens),
                    max_batch_requests: file
                        .max_batch_requests
                        .unwrap_or(DEFAULT_BATCH_LIMITS.max_batch_requests),
                    ..DEFAULT_BATCH_LIMITS
                },
                cache_bytes: file
                    .cache_bytes
                    .unwrap_or(DEFAULT_EMBEDDING_TUNING.cache_bytes),
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            if m.id.is_empty() || m.id.len() > 128 {
                bail!("embedding model ids must be 1 to 128 bytes, got {:?}", m.id);
            }
            if !seen.insert(m.id.as_str()) {
                bail!("embedding model id {:?} is configured twice", m.id);
            }
            match m.kind {
                ModelKind::Bert if m.path.is_none() => {
                    bail!("embedding model {:?} (bert) needs a path", m.id)
                }
                ModelKind::Hash => {
                    let dims = m.dimensions.unwrap_or(DEFAULT_HASH_DIMENSIONS);
                    if !(1..=4096).contains(&dims) {
                        bail!(
                            "embedding model {:?}: dimensions must be 1 to 4096, got {dims}",
                            m.id
                        );
                    }
                }
                ModelKind::Bert => {}
            }
        }
        if !seen.contains(self.default_model.as_str()) {
            bail!(
                "embedding default_model {:?} is not among the configured models",
                self.default_model
            );
        }
        let l = self.limits;
        if l.max_inputs == 0 || l.max_input_bytes == 0 || l.max_concurrent_requests == 0 {
            bail!("embedding limits must be positive: {l:?}");
        }
        let b = self.tuning.batch;
        if b.max_batch_tokens == 0 || b.max_batch_requests == 0 {
            bail!("embedding max_batch_tokens and max_batch_requests must be positive: {b:?}");
        }
        Ok(())
    }
}
