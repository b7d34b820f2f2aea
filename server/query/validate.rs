//! Every limit and rule a query request must meet, in one place.
//!
//! Field paths are relative to the request the engine gets: a StartCommand
//! (`messages[1].role`, `params.temperature`), or the unary request of a
//! control (`reason`, `model`). Where that request sits inside a larger
//! message (the commands of a Session stream), the API prefixes the paths
//! (`start.`, `terminate.`).

use std::time::Duration;

use super::models::ModelRegistry;
use super::settings::QueryConfig;
use super::types::{CacheMode, ChatMessage, Role, Rule, RuleTrigger, StartQuery};
use crate::error::{Error, Result, Violations};

/// Most messages in one Start.
pub const MAX_MESSAGES: usize = 1024;
/// Longest message content or system prompt, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1 << 20;
/// Most stop sequences.
pub const MAX_STOP: usize = 8;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Most labels.
pub const MAX_LABELS: usize = 16;
/// Longest label key or value, rule name or cache namespace, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest termination reason, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Most fallback models in one Start.
pub const MAX_FALLBACKS: usize = 8;
/// Most rules in one Start.
pub const MAX_RULES: usize = 16;
/// Longest query timeout or first-token latency a rule may wait for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What a Start is checked against besides its own fields.
#[derive(Debug, Clone, Copy)]
pub struct StartContext<'a> {
    /// The configured aliases.
    pub registry: &'a ModelRegistry,
    /// The engine's settings (the largest `max_tokens`).
    pub settings: &'a QueryConfig,
    /// Why the semantic cache cannot serve, if it cannot.
    pub semantic_unavailable: Option<&'a str>,
}

/// Checks every field of a Start. All invalid fields are reported at once;
/// when every field is valid but the model alias is unknown, the answer is
/// NotFound naming it.
pub fn check_start(start: &StartQuery, context: StartContext<'_>) -> Result<()> {
    let StartContext {
        registry,
        settings,
        semantic_unavailable,
    } = context;
    let mut v = Violations::new();
    if start.model.is_empty() {
        v.add("model", "must name a model alias (see ListQueryModels)");
    }
    if start.messages.is_empty() || start.messages.len() > MAX_MESSAGES {
        v.add(
            "messages",
            format!(
                "must hold 1 to {MAX_MESSAGES} messages, got {}",
                start.messages.len()
            ),
        );
    } else if start.messages.iter().all(|m| m.role == Role::System) {
        v.add(
            "messages",
            "must hold at least one user or assistant message",
        );
    }
    for (i, m) in start.messages.iter().enumerate() {
        check_content(&format!("messages[{i}].content"), &m.content, &mut v);
    }
    check_content("system_prompt", &start.system_prompt, &mut v);

    let p = &start.params;
    if let Some(t) = p.temperature
        && !(0.0..=2.0).contains(&t)
    {
        v.add(
            "params.temperature",
            format!("must be between 0 and 2, got {t}"),
        );
    }
    if let Some(t) = p.top_p
        && !(t > 0.0 && t <= 1.0)
    {
        v.add("params.top_p", format!("must be in (0, 1], got {t}"));
    }
    if p.stop.len() > MAX_STOP {
        v.add(
            "params.stop",
            format!(
                "must hold at most {MAX_STOP} sequences, got {}",
                p.stop.len()
            ),
        );
    }
    for (i, s) in p.stop.iter().enumerate() {
        if s.is_empty() || s.len() > MAX_STOP_BYTES {
            v.add(
                format!("params.stop[{i}]"),
                format!("must be 1 to {MAX_STOP_BYTES} bytes, got {}", s.len()),
            );
        }
    }
    let limit = settings.max_tokens_limit;
    if p.max_tokens > limit {
        v.add(
            "params.max_tokens",
            format!("must be at most {limit}, got {}", p.max_tokens),
        );
    }

    let c = &start.cache;
    if !(c.similarity_threshold > 0.0 && c.similarity_threshold <= 1.0) {
        v.add(
            "cache.similarity_threshold",
            format!(
                "must be in (0, 1], or 0 for the default, got {}",
                c.similarity_threshold
            ),
        );
    }
    if c.namespace.len() > MAX_NAME_BYTES {
        v.add(
            "cache.namespace",
            format!("must be at most {MAX_NAME_BYTES} bytes"),
        );
    }
    if c.mode == CacheMode::Semantic
        && let Some(reason) = semantic_unavailable
    {
        v.add("cache.mode", format!("CACHE_MODE_SEMANTIC {reason}"));
    }

    if start.rules.len() > MAX_RULES {
        v.add(
            "rules",
            format!(
                "must hold at most {MAX_RULES} rules, got {}",
                start.rules.len()
            ),
        );
    }
    for (i, rule) in start.rules.iter().enumerate() {
        check_rule(rule, &format!("rules[{i}]"), registry, &mut v);
    }
    if start.fallback_models.len() > MAX_FALLBACKS {
        v.add(
            "fallback_models",
            format!(
                "must hold at most {MAX_FALLBACKS} aliases, got {}",
                start.fallback_models.len()
            ),
        );
    }
    for (i, m) in start.fallback_models.iter().enumerate() {
        if !registry.contains(m) {
            v.add(
                format!("fallback_models[{i}]"),
                format!("unknown model alias {m:?}"),
            );
        }
    }
    if let Some(timeout) = start.timeout {
        check_duration("timeout", timeout, &mut v);
    }
    if start.labels.len() > MAX_LABELS {
        v.add(
            "labels",
            format!(
                "must hold at most {MAX_LABELS} labels, got {}",
                start.labels.len()
            ),
        );
    }
    for (k, val) in &start.labels {
        if k.is_empty() || k.len() > MAX_NAME_BYTES || val.len() > MAX_NAME_BYTES {
            v.add(
                format!("labels[{k:?}]"),
                format!(
                    "keys must be 1 to {MAX_NAME_BYTES} bytes and values at most {MAX_NAME_BYTES}"
                ),
            );
        }
    }
    v.finish()?;
    if !registry.contains(&start.model) {
        return Err(Error::NotFound {
            kind: "model",
            name: start.model.clone(),
        });
    }
    Ok(())
}

/// A message added to a running query: from the user or the system, at
/// most [`MAX_CONTENT_BYTES`]. Paths are under `message`.
pub fn check_injected(message: &ChatMessage) -> Result<()> {
    let mut v = Violations::new();
    if !matches!(message.role, Role::User | Role::System) {
        v.add("message.role", "must be ROLE_USER or ROLE_SYSTEM");
    }
    check_content("message.content", &message.content, &mut v);
    v.finish()
}

/// A termination reason: at most [`MAX_REASON_BYTES`].
pub fn check_reason(field: &str, reason: &str) -> Result<()> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "must be at most {MAX_REASON_BYTES} bytes, got {}",
                reason.len()
            ),
        ));
    }
    Ok(())
}

/// The alias a query is switched to: not empty (whether it exists is the
/// driver's answer, NotFound).
pub fn check_model(field: &str, model: &str) -> Result<()> {
    if model.is_empty() {
        return Err(Error::invalid(field, "must name a model alias"));
    }
    Ok(())
}

fn check_content(field: &str, content: &str, v: &mut Violations) {
    if content.len() > MAX_CONTENT_BYTES {
        v.add(
            field,
            format!(
                "must be at most {MAX_CONTENT_BYTES} bytes, got {}",
                content.len()
            ),
        );
    }
}

fn check_duration(field: &str, d: Duration, v: &mut Violations) {
    if d.is_zero() || d > MAX_TIMEOUT {
        v.add(
            field,
            format!("must be positive and at most {}s", MAX_TIMEOUT.as_secs()),
        );
    }
}

fn check_rule(rule: &Rule, path: &str, registry: &ModelRegistry, v: &mut Violations) {
    if rule.name.is_empty() || rule.name.len() > MAX_NAME_BYTES {
        v.add(
            format!("{path}.name"),
            format!("must be 1 to {MAX_NAME_BYTES} bytes"),
        );
    }
    if rule.switch_to_model.is_empty() {
        v.add(format!("{path}.switch_to_model"), "must name a model alias");
    } else if !registry.contains(&rule.switch_to_model) {
        v.add(
            format!("{path}.switch_to_model"),
            format!("unknown model alias {:?}", rule.switch_to_model),
        );
    }
    match rule.trigger {
        RuleTrigger::CostExceedsUsd(c) if !(c.is_finite() && c >= 0.0) => v.add(
            format!("{path}.cost_exceeds_usd"),
            format!("must be a non-negative number, got {c}"),
        ),
        RuleTrigger::FirstTokenLatencyExceeds(d) => {
            check_duration(&format!("{path}.first_token_latency_exceeds"), d, v);
        }
        RuleTrigger::CostExceedsUsd(_) | RuleTrigger::OutputTokensExceed(_) => {}
    }
}
