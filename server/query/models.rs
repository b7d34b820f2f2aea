//! The model registry: aliases → a provider, prices, a fallback chain, and
//! the cooldown of models that keep failing.
//!
//! Providers are built once at start-up from `[[query.models]]`. An alias
//! whose key is missing is still listed, as unavailable with the reason, so
//! `ListQueryModels` tells an operator what to fix instead of hiding it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::anthropic::AnthropicProvider;
use super::http::Endpoint;
use super::openai::OpenAiProvider;
use super::provider::{ModelProvider, Secret};
use super::settings::{ModelAliasSpec, ProviderKind};
use super::types::TokenUsage;
use crate::common::sync::lock;
use crate::error::{Error, Result};

/// One alias and what serves it.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Its configuration.
    pub spec: ModelAliasSpec,
    /// The backend.
    pub provider: Arc<dyn ModelProvider>,
}

impl ModelEntry {
    /// Cost in US dollars of `usage` on this model.
    pub fn cost(&self, usage: TokenUsage) -> f64 {
        usage.input as f64 * self.spec.input_cost_per_token_usd
            + usage.output as f64 * self.spec.output_cost_per_token_usd
    }
}

/// An alias as `ListQueryModels` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelListing {
    /// Configuration.
    pub spec: ModelAliasSpec,
    /// Why it cannot serve now, if so.
    pub unavailable_reason: Option<String>,
}

/// All aliases.
#[derive(Debug)]
pub struct ModelRegistry {
    entries: BTreeMap<String, ModelEntry>,
    cooldown: Duration,
    /// Alias → end of its cooldown.
    cooling: Mutex<HashMap<String, Instant>>,
}

/// Builds the provider of a `local` alias (the candle GGUF runner), given
/// the spec; supplied by the caller so the registry does not load models.
pub type LocalFactory<'a> = &'a dyn Fn(&ModelAliasSpec) -> Arc<dyn ModelProvider>;

impl ModelRegistry {
    /// Builds every alias's provider.
    pub fn build(
        specs: Vec<ModelAliasSpec>,
        cooldown: Duration,
        connect_timeout: Duration,
        local: LocalFactory<'_>,
    ) -> Self {
        let client = super::http::client(connect_timeout);
        let entries = specs
            .into_iter()
            .map(|spec| {
                let provider: Arc<dyn ModelProvider> = match spec.provider {
                    ProviderKind::Local => local(&spec),
                    ProviderKind::Openai => Arc::new(OpenAiProvider::new(endpoint(
                        &client,
                        &spec,
                        "https://api.openai.com/v1",
                        false,
                    ))),
                    ProviderKind::Anthropic => Arc::new(AnthropicProvider::new(endpoint(
                        &client,
                        &spec,
                        "https://api.anthropic.com",
                        true,
                    ))),
                };
                (spec.alias.clone(), ModelEntry { spec, provider })
            })
            .collect();
        Self {
            entries,
            cooldown,
            cooling: Mutex::new(HashMap::new()),
        }
    }

    /// The alias, or NotFound.
    pub fn get(&self, alias: &str) -> Result<&ModelEntry> {
        self.entries.get(alias).ok_or_else(|| Error::NotFound {
            kind: "model",
            name: alias.to_owned(),
        })
    }

    /// True if `alias` is configured.
    pub fn contains(&self, alias: &str) -> bool {
        self.entries.contains_key(alias)
    }

    /// Every alias in name order, with its availability now.
    pub fn list(&self) -> Vec<ModelListing> {
        self.entries
            .values()
            .map(|e| ModelListing {
                spec: e.spec.clone(),
                unavailable_reason: self.unavailable_reason(&e.spec.alias),
            })
            .collect()
    }

    /// Why `alias` cannot serve now: its provider's reason, or a cooldown.
    pub fn unavailable_reason(&self, alias: &str) -> Option<String> {
        let entry = self.entries.get(alias)?;
        if let Some(reason) = entry.provider.unavailable_reason() {
            return Some(reason);
        }
        let cooling = lock(&self.cooling);
        let until = cooling.get(alias)?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(format!(
            "cooling down for {} ms after repeated failures",
            left.as_millis()
        ))
    }

    /// Starts `alias`'s cooldown: fallback chains skip it until it ends.
    pub fn mark_failed(&self, alias: &str) {
        if self.cooldown.is_zero() {
            return;
        }
        lock(&self.cooling).insert(alias.to_owned(), Instant::now() + self.cooldown);
    }

    /// The alias's configured fallbacks.
    pub fn fallbacks(&self, alias: &str) -> Vec<String> {
        self.entries
            .get(alias)
            .map(|e| e.spec.fallbacks.clone())
            .unwrap_or_default()
    }
}

/// The endpoint of an HTTP alias: its base URL (else `default_url`) and
/// key; `key_required` for APIs that refuse calls without one.
fn endpoint(
    client: &reqwest::Client,
    spec: &ModelAliasSpec,
    default_url: &str,
    key_required: bool,
) -> Endpoint {
    let (key, missing) = read_key(spec, key_required);
    let url = spec.base_url.as_deref().unwrap_or(default_url);
    Endpoint::new(client.clone(), url, key, missing)
}

/// The key of an HTTP alias from its env var or file, or why it is missing.
/// Anthropic always needs one; an OpenAI-compatible server only when the
/// config names one (local servers usually take none).
fn read_key(spec: &ModelAliasSpec, required: bool) -> (Option<Secret>, Option<String>) {
    if let Some(path) = &spec.api_key_file {
        return match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                let key = text.lines().next().unwrap_or("").trim().to_owned();
                (Some(Secret::new(key)), None)
            }
            Ok(_) => (None, Some(format!("key file {} is empty", path.display()))),
            Err(e) => (
                None,
                Some(format!("cannot read key file {}: {e}", path.display())),
            ),
        };
    }
    if let Some(var) = &spec.api_key_env {
        return match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => (Some(Secret::new(key.trim().to_owned())), None),
            _ => (None, Some(format!("environment variable {var} is not set"))),
        };
    }
    if required {
        (
            None,
            Some("no api_key_env or api_key_file configured".to_owned()),
        )
    } else {
        (None, None)
    }
}
