//! `[query]` of agentd.toml: model aliases, routing and retention.
//!
//! ```toml
//! [query]
//! default_max_tokens = 1024
//! max_retries = 2
//! cooldown = "30s"
//!
//! [[query.models]]
//! alias = "fast"
//! provider = "openai"             # local | openai | anthropic
//! model_id = "qwen2.5-7b-instruct"
//! base_url = "http://127.0.0.1:8000/v1"
//! api_key_env = "VLLM_API_KEY"    # or api_key_file = "/run/secrets/key"
//! context_window = 32768
//! input_cost_per_token_usd = 0.0
//! output_cost_per_token_usd = 0.0
//! fallbacks = ["sonnet"]
//!
//! [[query.rules]]
//! name = "budget"
//! cost_exceeds_usd = 0.05
//! switch_to_model = "haiku"
//! ```
//!
//! Keys are read from the named environment variable or file at start-up,
//! never from this file, and never logged.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::types::{Rule, RuleTrigger};

/// Which kind of backend serves an alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// In-process GGUF model (candle).
    Local,
    /// OpenAI-compatible chat completions.
    Openai,
    /// Anthropic Messages API.
    Anthropic,
}

/// One `[[query.models]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelAliasSpec {
    /// The name queries use, e.g. "sonnet".
    pub alias: String,
    /// Backend kind.
    pub provider: ProviderKind,
    /// The provider's model id (for `local`, a name for logs).
    pub model_id: String,
    /// Endpoint for HTTP providers; defaults to the public API.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the API key (first line).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// For `local`: the GGUF file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Context window in tokens; 0 when unknown.
    #[serde(default)]
    pub context_window: u32,
    /// Price of one input token in US dollars.
    #[serde(default)]
    pub input_cost_per_token_usd: f64,
    /// Price of one output token in US dollars.
    #[serde(default)]
    pub output_cost_per_token_usd: f64,
    /// Aliases tried in order when this one fails.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Whether queries with tools may run on it; unset means yes for the
    /// HTTP providers (whose APIs have tool calling) and no for `local`
    /// (the base model has no tool format), which cannot be set to yes.
    #[serde(default)]
    pub supports_tools: Option<bool>,
}

impl ModelAliasSpec {
    /// Whether the model can call tools.
    pub fn supports_tools(&self) -> bool {
        self.provider != ProviderKind::Local && self.supports_tools.unwrap_or(true)
    }
}

/// One `[[query.rules]]` entry: exactly one trigger.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Name shown when it fires.
    pub name: String,
    /// Cost trigger.
    #[serde(default)]
    pub cost_exceeds_usd: Option<f64>,
    /// First-token latency trigger.
    #[serde(default, with = "humantime_serde")]
    pub first_token_latency_exceeds: Option<Duration>,
    /// Output-token trigger.
    #[serde(default)]
    pub output_tokens_exceed: Option<u64>,
    /// Alias to switch to.
    pub switch_to_model: String,
}

impl RuleSpec {
    /// The rule, or why the entry is wrong.
    pub fn to_rule(&self) -> anyhow::Result<Rule> {
        let triggers = [
            self.cost_exceeds_usd.map(RuleTrigger::CostExceedsUsd),
            self.first_token_latency_exceeds
                .map(RuleTrigger::FirstTokenLatencyExceeds),
            self.output_tokens_exceed
                .map(RuleTrigger::OutputTokensExceed),
        ];
        let mut set = triggers.into_iter().flatten();
        let (Some(trigger), None) = (set.next(), set.next()) else {
            bail!(
                "query rule {:?} needs exactly one of cost_exceeds_usd, first_token_latency_exceeds, output_tokens_exceed",
                self.name
            );
        };
        Ok(Rule {
            name: self.name.clone(),
            trigger,
            switch_to_model: self.switch_to_model.clone(),
        })
    }
}

/// The query engine's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Model aliases; when given, replace the built-in ones.
    pub models: Option<Vec<ModelAliasSpec>>,
    /// Rules applied to every query.
    pub rules: Vec<RuleSpec>,
    /// `max_tokens` of a query that gives 0.
    pub default_max_tokens: u32,
    /// Largest `max_tokens` a query may ask for.
    pub max_tokens_limit: u32,
    /// Retries of a retryable failure on one model before falling back.
    pub max_retries: u32,
    /// First retry delay; doubles per retry.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// How long a model that exhausted its retries is skipped by fallback
    /// chains.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// A model that sends no first token within this time has failed
    /// (retryable).
    #[serde(with = "humantime_serde")]
    pub first_token_timeout: Duration,
    /// A query's longest run time, pauses excluded, unless it sets its own.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// TCP connect timeout of HTTP providers.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long finished queries stay in memory (they stay in the store).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Most finished queries kept in memory; beyond, the oldest are read
    /// from the store instead.
    pub retention_max_queries: usize,
    /// Running and paused queries at most; beyond, Start answers
    /// RESOURCE_EXHAUSTED.
    pub max_live_queries: usize,
    /// Bytes of answers in the exact result cache; 0 disables it.
    pub cache_bytes: u64,
    /// Answers kept by the semantic cache; 0 disables it.
    pub semantic_cache_entries: usize,
    /// Threads of the local model's decode loop; 0 means all cores.
    pub local_threads: usize,
    /// Calls that may wait for a local model while it runs another; a
    /// query that would be one more is refused at Start (OVERLOADED).
    pub local_max_queued: usize,
    /// How long a tool call waits for its result when its definition
    /// gives no timeout; then it is answered with an error.
    #[serde(with = "humantime_serde")]
    pub tool_timeout: Duration,
    /// Largest result of a built-in tool, as JSON; a larger one is
    /// answered with an error asking the model for less.
    pub tool_result_max_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            models: None,
            rules: Vec::new(),
            default_max_tokens: 1024,
            max_tokens_limit: 65_536,
            max_retries: 2,
            retry_backoff: Duration::from_millis(250),
            max_retry_backoff: Duration::from_secs(8),
            cooldown: Duration::from_secs(30),
            first_token_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(900),
            retention_max_queries: 10_000,
            max_live_queries: 10_000,
            cache_bytes: 64 << 20,
            semantic_cache_entries: 10_000,
            local_threads: 0,
            local_max_queued: DEFAULT_LOCAL_MAX_QUEUED,
            tool_timeout: Duration::from_secs(300),
            tool_result_max_bytes: 64 << 10,
        }
    }
}

/// Default of `local_max_queued`: at about a second and a half per short
/// answer on two cores, the last of 64 waits about a minute and a half,
/// well within the default query timeout.
pub const DEFAULT_LOCAL_MAX_QUEUED: usize = 64;

/// Most calls `local_max_queued` may allow.
const MAX_LOCAL_QUEUED: usize = 100_000;

/// Built-in aliases when `[[query.models]]` is absent: the Anthropic
/// models (available once `ANTHROPIC_API_KEY` is set), and `local` when
/// the fetched GGUF model exists.
pub fn default_models(local_model: Option<PathBuf>) -> Vec<ModelAliasSpec> {
    let anthropic =
        |alias: &str, id: &str, input: f64, output: f64, fallbacks: &[&str]| ModelAliasSpec {
            alias: alias.to_owned(),
            provider: ProviderKind::Anthropic,
            model_id: id.to_owned(),
            base_url: None,
            api_key_env: Some("ANTHROPIC_API_KEY".to_owned()),
            api_key_file: None,
            path: None,
            context_window: 200_000,
            input_cost_per_token_usd: input / 1e6,
            output_cost_per_token_usd: output / 1e6,
            fallbacks: fallbacks.iter().map(|s| (*s).to_owned()).collect(),
            supports_tools: None,
        };
    let mut models = vec![
        anthropic("opus", "claude-opus-4-1", 15.0, 75.0, &["sonnet"]),
        anthropic("sonnet", "claude-sonnet-4-5", 3.0, 15.0, &["haiku"]),
        anthropic("haiku", "claude-haiku-4-5", 1.0, 5.0, &[]),
    ];
    if let Some(path) = local_model {
        models.push(ModelAliasSpec {
            alias: "local".to_owned(),
            provider: ProviderKind::Local,
            model_id: "gemma-3-270m".to_owned(),
            base_url: None,
            api_key_env: None,
            api_key_file: None,
            path: Some(path),
            context_window: 8192,
            input_cost_per_token_usd: 0.0,
            output_cost_per_token_usd: 0.0,
            fallbacks: Vec::new(),
            supports_tools: None,
        });
    }
    models
}

impl QueryConfig {
    /// The configured aliases, or the built-in ones.
    pub fn model_specs(&self) -> Vec<ModelAliasSpec> {
        self.models.clone().unwrap_or_else(|| {
            let local = PathBuf::from(super::DEFAULT_LOCAL_MODEL);
            default_models(local.exists().then_some(local))
        })
    }

    /// Checks every value against its documented limits and that aliases,
    /// fallbacks and rules name configured models.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.default_max_tokens == 0 || self.default_max_tokens > self.max_tokens_limit {
            bail!(
                "query default_max_tokens must be between 1 and max_tokens_limit ({}), got {}",
                self.max_tokens_limit,
                self.default_max_tokens
            );
        }
        if self.max_retries > 10 {
            bail!(
                "query max_retries must be at most 10, got {}",
                self.max_retries
            );
        }
        if self.max_live_queries == 0 {
            bail!("query max_live_queries must be at least 1");
        }
        if self.tool_timeout.is_zero() || self.tool_timeout > super::validate::MAX_TIMEOUT {
            bail!(
                "query tool_timeout must be positive and at most {} s",
                super::validate::MAX_TIMEOUT.as_secs()
            );
        }
        if !(1024..=super::validate::MAX_CONTENT_BYTES).contains(&self.tool_result_max_bytes) {
            bail!(
                "query tool_result_max_bytes must be 1024 to {}, got {}",
                super::validate::MAX_CONTENT_BYTES,
                self.tool_result_max_bytes
            );
        }
        if self.local_max_queued > MAX_LOCAL_QUEUED {
            bail!(
                "query local_max_queued must be at most {MAX_LOCAL_QUEUED}, got {}",
                self.local_max_queued
            );
        }
        let specs = self.model_specs();
        let mut names = std::collections::BTreeSet::new();
        for spec in &specs {
            if spec.alias.is_empty() || spec.alias.len() > 64 {
                bail!(
                    "query model alias must be 1 to 64 bytes, got {:?}",
                    spec.alias
                );
            }
            if !names.insert(spec.alias.as_str()) {
                bail!("query model alias {:?} is defined twice", spec.alias);
            }
            if spec.provider == ProviderKind::Local && spec.supports_tools == Some(true) {
                bail!(
                    "query model {:?}: provider local cannot call tools (supports_tools = true)",
                    spec.alias
                );
            }
            if spec.provider == ProviderKind::Local && spec.path.is_none() {
                bail!(
                    "query model {:?}: provider local needs `path` (a GGUF file)",
                    spec.alias
                );
            }
        }
        for spec in &specs {
            for f in &spec.fallbacks {
                if !names.contains(f.as_str()) {
                    bail!(
                        "query model {:?}: fallback {f:?} is not a configured alias",
                        spec.alias
                    );
                }
            }
        }
        for rule in &self.rules {
            rule.to_rule()?;
            if !names.contains(rule.switch_to_model.as_str()) {
                bail!(
                    "query rule {:?}: switch_to_model {:?} is not a configured alias",
                    rule.name,
                    rule.switch_to_model
                );
            }
        }
        Ok(())
    }

    /// The configured rules.
    pub fn rules(&self) -> Vec<Rule> {
        self.rules.iter().filter_map(|r| r.to_rule().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<QueryConfig> {
        let config: QueryConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    const TWO_MODELS: &str = r#"
        [[models]]
        alias = "fast"
        provider = "openai"
        model_id = "m"
        base_url = "http://127.0.0.1:1/v1"
        fallbacks = ["slow"]

        [[models]]
        alias = "slow"
        provider = "anthropic"
        model_id = "claude"
        api_key_env = "SOME_KEY"
    "#;

    #[test]
    fn models_and_rules_from_toml() {
        let config = parse(&format!(
            "{TWO_MODELS}\n[[rules]]\nname = \"budget\"\ncost_exceeds_usd = 0.5\nswitch_to_model = \"fast\"\n"
        ))
        .unwrap();
        assert_eq!(config.model_specs().len(), 2);
        assert_eq!(
            config.rules(),
            vec![Rule {
                name: "budget".into(),
                trigger: RuleTrigger::CostExceedsUsd(0.5),
                switch_to_model: "fast".into()
            }]
        );
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_reason() {
        let cases = [
            (
                format!("{TWO_MODELS}\n[[rules]]\nname = \"r\"\noutput_tokens_exceed = 5\nswitch_to_model = \"ghost\"\n"),
                "not a configured alias",
            ),
            (
                format!("{TWO_MODELS}\n[[rules]]\nname = \"r\"\nswitch_to_model = \"fast\"\n"),
                "exactly one of",
            ),
            (
                "[[models]]\nalias = \"a\"\nprovider = \"openai\"\nmodel_id = \"m\"\nfallbacks = [\"b\"]\n".into(),
                "fallback \"b\"",
            ),
            (
                "[[models]]\nalias = \"a\"\nprovider = \"local\"\nmodel_id = \"m\"\n".into(),
                "needs `path`",
            ),
            (
                format!("{TWO_MODELS}\n[[models]]\nalias = \"fast\"\nprovider = \"openai\"\nmodel_id = \"x\"\n"),
                "defined twice",
            ),
            ("default_max_tokens = 0\n".into(), "default_max_tokens"),
            (
                "[[models]]\nalias = \"a\"\nprovider = \"local\"\nmodel_id = \"m\"\npath = \"m.gguf\"\nsupports_tools = true\n".into(),
                "cannot call tools",
            ),
            ("tool_result_max_bytes = 10\n".into(), "tool_result_max_bytes"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }
}
