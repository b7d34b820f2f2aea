//! Every limit and rule a query request must meet, in one place.
//!
//! Field paths are relative to the request the engine gets: a StartCommand
//! (`messages[1].role`, `params.temperature`), or the unary request of a
//! control (`reason`, `model`). Where that request sits inside a larger
//! message (the commands of a Session stream), the API prefixes the paths
//! (`start.`, `terminate.`).

use std::time::Duration;

use std::collections::HashSet;

use serde_json::Value;

use super::models::ModelRegistry;
use super::settings::QueryConfig;
use super::tools::schema::schema_problem;
use super::tools::{ServerTools, ToolChoice, ToolLocation, ToolOutcome, ToolSpec};
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
/// Most tools one query offers, and most calls in one assistant message.
pub const MAX_TOOLS: usize = 128;
/// Longest tool name, in bytes.
pub const MAX_TOOL_NAME_BYTES: usize = 64;
/// Longest tool description, in bytes.
pub const MAX_TOOL_DESCRIPTION_BYTES: usize = 4096;
/// Largest tool parameter schema, as JSON.
pub const MAX_TOOL_SCHEMA_BYTES: usize = 64 << 10;
/// Model turns of a query when Start gives none.
pub const DEFAULT_MAX_TURNS: u32 = 8;
/// Most model turns a query may ask for.
pub const MAX_TURNS: u32 = 100;

/// What a Start is checked against besides its own fields.
#[derive(Debug, Clone, Copy)]
pub struct StartContext<'a> {
    /// The configured aliases.
    pub registry: &'a ModelRegistry,
    /// The engine's settings (the largest `max_tokens`).
    pub settings: &'a QueryConfig,
    /// Why the semantic cache cannot serve, if it cannot.
    pub semantic_unavailable: Option<&'a str>,
    /// The built-in tools a query may name.
    pub server_tools: &'a ServerTools,
    /// Whether worker tools can be leased (the Agent engine runs).
    pub worker_tools: bool,
}

/// Checks every field of a Start. All invalid fields are reported at once;
/// when every field is valid but the model alias is unknown, the answer is
/// NotFound naming it; a model that cannot serve the tools, or a worker
/// tool when no Agent engine leases them, is FailedPrecondition.
pub fn check_start(start: &StartQuery, context: StartContext<'_>) -> Result<()> {
    let StartContext {
        registry,
        settings,
        semantic_unavailable,
        server_tools,
        worker_tools,
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
    check_tool_history(&start.messages, &mut v);
    check_content("system_prompt", &start.system_prompt, &mut v);
    check_tools(
        "",
        &start.tools,
        &start.tool_choice,
        start.max_turns,
        server_tools,
        &mut v,
    );

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
    let entry = registry.get(&start.model).map_err(|_| Error::NotFound {
        kind: "model",
        name: start.model.clone(),
    })?;
    if start.needs_tools() && !entry.spec.supports_tools() {
        return Err(Error::WrongState(format!(
            "model {:?} cannot call tools: start a query with tools (or tool history) on a \
             model whose alias has supports_tools (see ListQueryModels)",
            start.model
        )));
    }
    if let Some((i, t)) = start
        .tools
        .iter()
        .enumerate()
        .find(|(_, t)| t.location == ToolLocation::Worker)
        && !worker_tools
    {
        return Err(Error::WrongState(format!(
            "tools[{i}] ({:?}) runs on a worker (TOOL_LOCATION_WORKER), which the Agent engine \
             leases; the Agent service is disabled on this server",
            t.name
        )));
    }
    Ok(())
}

/// Tools offered to a model (a Start's, or an agent spec's with `prefix`
/// `spec.`): names, descriptions, schemas, the choice and the turn limit.
pub fn check_tools(
    prefix: &str,
    tools: &[ToolSpec],
    tool_choice: &ToolChoice,
    max_turns: u32,
    server_tools: &ServerTools,
    v: &mut Violations,
) {
    if tools.len() > MAX_TOOLS {
        v.add(
            format!("{prefix}tools"),
            format!("must hold at most {MAX_TOOLS} tools, got {}", tools.len()),
        );
    }
    let mut names = HashSet::new();
    for (i, t) in tools.iter().enumerate() {
        let path = format!("{prefix}tools[{i}]");
        check_tool_name(&format!("{path}.name"), &t.name, v);
        if !names.insert(t.name.as_str()) {
            v.add(
                format!("{path}.name"),
                format!("{:?} is defined twice", t.name),
            );
        }
        if t.location == ToolLocation::Server {
            if server_tools.describe(&t.name).is_none() {
                v.add(
                    format!("{path}.name"),
                    format!(
                        "agentd has no built-in tool named {:?}; it has: {}",
                        t.name,
                        server_tools.names().join(", ")
                    ),
                );
            }
            if !t.description.is_empty() || !t.parameters.is_null() {
                v.add(
                    path.clone(),
                    "a server tool's description and parameters are agentd's: leave them empty",
                );
            }
        } else {
            check_tool_definition(&path, t, v);
        }
        if t.location == ToolLocation::Worker && t.worker_capability.is_empty() {
            v.add(
                format!("{path}.worker_capability"),
                "must name the capability of the workers that run the tool",
            );
        }
        if let Some(timeout) = t.timeout {
            check_duration(&format!("{path}.timeout"), timeout, v);
        }
    }
    match tool_choice {
        ToolChoice::Required if tools.is_empty() => {
            v.add(
                format!("{prefix}tool_choice.mode"),
                "REQUIRED needs at least one tool",
            );
        }
        ToolChoice::Named(name) if !tools.iter().any(|t| t.name == *name) => {
            v.add(
                format!("{prefix}tool_choice.name"),
                format!("names no tool of this query: {name:?}"),
            );
        }
        _ => {}
    }
    if max_turns > MAX_TURNS {
        v.add(
            format!("{prefix}max_turns"),
            format!("must be at most {MAX_TURNS}, got {max_turns}"),
        );
    }
}

/// A client or worker tool's description and schema.
fn check_tool_definition(path: &str, t: &ToolSpec, v: &mut Violations) {
    if t.description.len() > MAX_TOOL_DESCRIPTION_BYTES {
        v.add(
            format!("{path}.description"),
            format!(
                "must be at most {MAX_TOOL_DESCRIPTION_BYTES} bytes, got {}",
                t.description.len()
            ),
        );
    }
    if t.parameters.is_null() {
        return;
    }
    let size = t.parameters.to_string().len();
    if size > MAX_TOOL_SCHEMA_BYTES {
        v.add(
            format!("{path}.parameters"),
            format!("must be at most {MAX_TOOL_SCHEMA_BYTES} bytes as JSON, got {size}"),
        );
    } else if let Some(problem) = schema_problem(&t.parameters) {
        v.add(format!("{path}.parameters"), problem);
    }
}

fn check_tool_name(field: &str, name: &str, v: &mut Violations) {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOOL_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        v.add(
            field,
            format!("must be 1 to {MAX_TOOL_NAME_BYTES} of [A-Za-z0-9_-], got {name:?}"),
        );
    }
}

/// Tool history in the messages of a Start: calls only on assistant
/// messages, each with a unique id and a tool name, each answered by a
/// tool message before the next user or assistant message; every tool
/// message answers such a call.
fn check_tool_history(messages: &[ChatMessage], v: &mut Violations) {
    let mut seen = HashSet::new();
    // Calls of the last assistant message still without an answer.
    let mut open: Vec<&str> = Vec::new();
    let mut open_at = 0;
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        if m.role != Role::Tool && !open.is_empty() {
            v.add(
                format!("messages[{open_at}].tool_calls"),
                format!("calls {open:?} have no tool message (ROLE_TOOL) before messages[{i}]"),
            );
            open.clear();
        }
        if m.role != Role::Assistant && !m.tool_calls.is_empty() {
            v.add(
                format!("{path}.tool_calls"),
                "only assistant messages carry tool calls",
            );
        }
        if m.role != Role::Tool && (!m.tool_call_id.is_empty() || m.is_error) {
            v.add(
                format!("{path}.tool_call_id"),
                "only tool messages (ROLE_TOOL) answer a call",
            );
        }
        match m.role {
            Role::Assistant => {
                if m.tool_calls.len() > MAX_TOOLS {
                    v.add(
                        format!("{path}.tool_calls"),
                        format!("must hold at most {MAX_TOOLS} calls"),
                    );
                }
                for (j, c) in m.tool_calls.iter().enumerate() {
                    let call = format!("{path}.tool_calls[{j}]");
                    if c.id.is_empty() || c.id.len() > MAX_NAME_BYTES * 4 {
                        v.add(format!("{call}.id"), "must be 1 to 256 bytes");
                    } else if !seen.insert(c.id.as_str()) {
                        v.add(format!("{call}.id"), format!("{:?} is used twice", c.id));
                    }
                    check_tool_name(&format!("{call}.name"), &c.name, v);
                    if c.arguments.to_string().len() > MAX_CONTENT_BYTES {
                        v.add(
                            format!("{call}.arguments"),
                            format!("must be at most {MAX_CONTENT_BYTES} bytes as JSON"),
                        );
                    }
                }
                open = m.tool_calls.iter().map(|c| c.id.as_str()).collect();
                open_at = i;
            }
            Role::Tool => {
                if let Some(k) = open.iter().position(|id| *id == m.tool_call_id) {
                    open.remove(k);
                } else {
                    v.add(
                        format!("{path}.tool_call_id"),
                        format!(
                            "must name an unanswered call of the assistant message before it, \
                             got {:?}",
                            m.tool_call_id
                        ),
                    );
                }
            }
            Role::User | Role::System => {}
        }
    }
    if !open.is_empty() {
        v.add(
            format!("messages[{open_at}].tool_calls"),
            format!("calls {open:?} have no tool message (ROLE_TOOL)"),
        );
    }
}

/// A tool result from a client: at most [`MAX_CONTENT_BYTES`]. Paths are
/// relative to the request (`result` or `error`).
pub fn check_tool_result(call_id: &str, outcome: &ToolOutcome) -> Result<()> {
    let mut v = Violations::new();
    if call_id.is_empty() {
        v.add("call_id", "must name a tool call (ToolCallEvent.call_id)");
    }
    let field = if outcome.is_error { "error" } else { "result" };
    check_content(field, &outcome.content, &mut v);
    v.finish()
}

/// The parameters a tool offers the model: its own schema, or for a tool
/// that takes no arguments an empty object schema.
pub fn parameters_or_none(parameters: &Value) -> Value {
    if parameters.is_null() {
        super::tools::schema::no_arguments()
    } else {
        parameters.clone()
    }
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
