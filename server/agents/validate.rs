//! Every limit and rule of the agents engine's requests, in one place.
//! Field paths are relative to the request message (`spec.model`,
//! `requests[2].count`).

use super::types::{SpawnParams, SpecBody};
use crate::error::Violations;
use crate::query::{QueryEngine, ToolChoice, ToolLocation, check_tools};

/// Longest spec name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Most capabilities of a spec.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest system prompt.
pub const MAX_SYSTEM_PROMPT_BYTES: usize = 64 << 10;
/// Most labels of a spec or agent.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value.
pub const MAX_LABEL_BYTES: usize = 64;
/// Most fallback models.
pub const MAX_FALLBACKS: usize = 8;
/// Most tasks one agent may run at once.
pub const MAX_CONCURRENCY: u32 = 1000;
/// Most memories a task gets as context.
pub const MAX_MEMORY_TOP_K: u32 = 100;
/// Most agents one Spawn makes.
pub const MAX_SPAWN: u32 = 1000;
/// Most requests of a SpawnBatch.
pub const MAX_BATCH: usize = 100;
/// Longest idempotency key.
pub const MAX_KEY_BYTES: usize = 128;

/// Names (specs) match `[A-Za-z0-9_.-]{1,64}`.
pub fn check_name(field: &str, name: &str, v: &mut Violations) {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !ok {
        v.add(
            field,
            format!("must match [A-Za-z0-9_.-]{{1,{MAX_NAME_BYTES}}}, got {name:?}"),
        );
    }
}

fn check_labels(
    field: &str,
    labels: &std::collections::BTreeMap<String, String>,
    v: &mut Violations,
) {
    if labels.len() > MAX_LABELS {
        v.add(
            field,
            format!(
                "must hold at most {MAX_LABELS} labels, got {}",
                labels.len()
            ),
        );
    }
    for (k, val) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_BYTES || val.len() > MAX_LABEL_BYTES {
            v.add(
                format!("{field}[{k:?}]"),
                format!(
                    "keys must be 1 to {MAX_LABEL_BYTES} bytes and values at most {MAX_LABEL_BYTES}"
                ),
            );
        }
    }
}

/// A spec's fields, under `spec.`; `is_model` says whether an alias
/// exists (None: the query service is off).
pub fn check_spec(
    name: &str,
    body: &SpecBody,
    is_model: &dyn Fn(&str) -> Option<bool>,
    v: &mut Violations,
) {
    check_name("spec.name", name, v);
    if body.description.len() > MAX_DESCRIPTION_BYTES {
        v.add(
            "spec.description",
            format!("must be at most {MAX_DESCRIPTION_BYTES} bytes"),
        );
    }
    if body.capabilities.len() > MAX_CAPABILITIES {
        v.add(
            "spec.capabilities",
            format!("must hold at most {MAX_CAPABILITIES}"),
        );
    }
    for (i, c) in body.capabilities.iter().enumerate() {
        let ok = !c.is_empty()
            && c.len() <= 64
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.' || b == b'-'
            });
        if !ok {
            v.add(
                format!("spec.capabilities[{i}]"),
                format!("must match [a-z0-9_.-]{{1,64}}, got {c:?}"),
            );
        }
    }
    let check_alias = |field: String, alias: &str, v: &mut Violations| match is_model(alias) {
        Some(true) => {}
        Some(false) => v.add(
            field,
            format!("unknown model alias {alias:?} (see QueryControlService.ListQueryModels)"),
        ),
        None => v.add(field, "the query service is disabled on this server"),
    };
    if !body.model.is_empty() {
        check_alias("spec.model".into(), &body.model, v);
    }
    if body.fallback_models.len() > MAX_FALLBACKS {
        v.add(
            "spec.fallback_models",
            format!("must hold at most {MAX_FALLBACKS}"),
        );
    }
    for (i, m) in body.fallback_models.iter().enumerate() {
        check_alias(format!("spec.fallback_models[{i}]"), m, v);
    }
    if body.model.is_empty() && !body.fallback_models.is_empty() {
        v.add(
            "spec.fallback_models",
            "need a model to fall back from (spec.model is empty)",
        );
    }
    if body.system_prompt.len() > MAX_SYSTEM_PROMPT_BYTES {
        v.add(
            "spec.system_prompt",
            format!("must be at most {MAX_SYSTEM_PROMPT_BYTES} bytes"),
        );
    }
    if body.concurrency_limit > MAX_CONCURRENCY {
        v.add(
            "spec.concurrency_limit",
            format!("must be at most {MAX_CONCURRENCY}"),
        );
    }
    if body.memory_namespace.is_empty() {
        if name.len() + "agent-".len() > MAX_NAME_BYTES {
            v.add(
                "spec.memory_namespace",
                "must be set for a spec name over 58 bytes (the default is agent-<name>)",
            );
        }
    } else {
        crate::memory::check_name("spec.memory_namespace", &body.memory_namespace, v);
    }
    if body.memory_top_k > MAX_MEMORY_TOP_K {
        v.add(
            "spec.memory_top_k",
            format!("must be at most {MAX_MEMORY_TOP_K}"),
        );
    }
    check_labels("spec.labels", &body.labels, v);
}

/// A spec's tools and turn limit, under `spec.`: the rules of a Start's
/// tools (`query`'s built-in tools), a model that can call them, and no
/// client tools (no client answers an agent's calls).
pub fn check_spec_tools(body: &SpecBody, query: &QueryEngine, v: &mut Violations) {
    check_tools(
        "spec.",
        &body.tools,
        &ToolChoice::Auto,
        body.max_turns,
        query.server_tools(),
        v,
    );
    for (i, t) in body.tools.iter().enumerate() {
        if t.location == ToolLocation::Client {
            v.add(
                format!("spec.tools[{i}].location"),
                "an agent's tools run on the server (TOOL_LOCATION_SERVER) or on a worker \
                 (TOOL_LOCATION_WORKER): no client answers the calls of an agent's task",
            );
        }
    }
    if body.tools.is_empty() {
        return;
    }
    if body.model.is_empty() {
        v.add(
            "spec.tools",
            "need a model to call them (spec.model is empty: a worker-only spec)",
        );
    }
    for (field, alias) in std::iter::once(("spec.model".to_owned(), &body.model)).chain(
        body.fallback_models
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("spec.fallback_models[{i}]"), m)),
    ) {
        if query.supports_tools(alias) == Some(false) {
            v.add(
                field,
                format!(
                    "model {alias:?} cannot call tools, and spec.tools is set (see \
                     ListQueryModels: supports_tools)"
                ),
            );
        }
    }
}

/// A spawn request's fields, under `prefix` (`` or `requests[i].`).
pub fn check_spawn(prefix: &str, p: &SpawnParams, v: &mut Violations) {
    check_name(&format!("{prefix}spec_name"), &p.spec_name, v);
    if p.count == 0 || p.count > MAX_SPAWN {
        v.add(
            format!("{prefix}count"),
            format!("must be 1 to {MAX_SPAWN}, got {}", p.count),
        );
    }
    if p.idempotency_key.len() > MAX_KEY_BYTES {
        v.add(
            format!("{prefix}idempotency_key"),
            format!("must be at most {MAX_KEY_BYTES} bytes"),
        );
    }
    check_labels(&format!("{prefix}labels"), &p.labels, v);
}
