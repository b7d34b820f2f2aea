//! Conversions between `agentd.v1` query messages and the query engine's
//! types, with the checks of every request field (limits named in the
//! errors, as query.proto documents them).

use std::collections::BTreeMap;
use std::time::Duration;

use super::convert::timestamp;
use super::error::stream_error;
use crate::error::{Error, FieldViolation};
use crate::pb::v1 as pb;
use crate::query::events::{Event, EventKind, ModelSpan, QueryError, QueryInfo};
use crate::query::models::ModelListing;
use crate::query::settings::ProviderKind;
use crate::query::types::{
    CacheKind, CacheMode, CachePolicy, ChatMessage, DEFAULT_SIMILARITY, FinishReason,
    GenerationParams, QueryState, Role, Rule, RuleTrigger, StartQuery, SwitchReason, TokenUsage,
};

/// Most messages in one Start.
pub const MAX_MESSAGES: usize = 1024;
/// Longest message content or system prompt, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1 << 20;
/// Most stop sequences, and the longest.
pub const MAX_STOP: usize = 8;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// Most labels, and the longest key or value.
pub const MAX_LABELS: usize = 16;
/// Longest label key or value, rule name or alias, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest termination reason, in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Most fallback models in one Start.
pub const MAX_FALLBACKS: usize = 8;
/// Most rules in one Start.
pub const MAX_RULES: usize = 16;
/// Longest query timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Collects violations so a request reports all its bad fields at once.
#[derive(Debug, Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    fn done(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

/// A chat message, checked; `path` names it in errors.
pub fn message_from(m: pb::Message, path: &str, allowed: &[Role]) -> Result<ChatMessage, Error> {
    let mut v = Violations::default();
    let role = match pb::Role::try_from(m.role) {
        Ok(pb::Role::System) => Some(Role::System),
        Ok(pb::Role::User) => Some(Role::User),
        Ok(pb::Role::Assistant) => Some(Role::Assistant),
        _ => None,
    };
    match role {
        Some(r) if allowed.contains(&r) => {}
        _ => v.add(
            format!("{path}.role"),
            format!(
                "must be one of {}",
                allowed
                    .iter()
                    .map(|r| format!("ROLE_{}", r.as_str().to_uppercase()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    if m.content.len() > MAX_CONTENT_BYTES {
        v.add(
            format!("{path}.content"),
            format!(
                "must be at most {MAX_CONTENT_BYTES} bytes, got {}",
                m.content.len()
            ),
        );
    }
    v.done()?;
    Ok(ChatMessage {
        role: role.unwrap_or(Role::User),
        content: m.content,
    })
}

fn duration_from(d: prost_types::Duration, path: &str, v: &mut Violations) -> Option<Duration> {
    match Duration::try_from(d) {
        Ok(d) if !d.is_zero() && d <= MAX_TIMEOUT => Some(d),
        _ => {
            v.add(
                path,
                format!("must be positive and at most {}s", MAX_TIMEOUT.as_secs()),
            );
            None
        }
    }
}

/// A Start command as the engine's request.
pub fn start_from(s: pb::StartCommand) -> Result<StartQuery, Error> {
    let mut v = Violations::default();
    if s.model.is_empty() {
        v.add(
            "start.model",
            "must name a model alias (see ListQueryModels)",
        );
    }
    if s.messages.is_empty() || s.messages.len() > MAX_MESSAGES {
        v.add(
            "start.messages",
            format!(
                "must hold 1 to {MAX_MESSAGES} messages, got {}",
                s.messages.len()
            ),
        );
    }
    let mut messages = Vec::with_capacity(s.messages.len());
    let all = [Role::System, Role::User, Role::Assistant];
    for (i, m) in s.messages.into_iter().enumerate() {
        match message_from(m, &format!("start.messages[{i}]"), &all) {
            Ok(m) => messages.push(m),
            Err(Error::InvalidArgument(errs)) => v.0.extend(errs),
            Err(e) => return Err(e),
        }
    }
    if s.system_prompt.len() > MAX_CONTENT_BYTES {
        v.add(
            "start.system_prompt",
            format!(
                "must be at most {MAX_CONTENT_BYTES} bytes, got {}",
                s.system_prompt.len()
            ),
        );
    }
    let params = params_from(s.params.unwrap_or_default(), &mut v);
    let cache = cache_from(s.cache.unwrap_or_default(), &mut v);
    if s.rules.len() > MAX_RULES {
        v.add(
            "start.rules",
            format!("must hold at most {MAX_RULES} rules, got {}", s.rules.len()),
        );
    }
    let rules = s
        .rules
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| rule_from(r, &format!("start.rules[{i}]"), &mut v))
        .collect();
    if s.fallback_models.len() > MAX_FALLBACKS {
        v.add(
            "start.fallback_models",
            format!(
                "must hold at most {MAX_FALLBACKS} aliases, got {}",
                s.fallback_models.len()
            ),
        );
    }
    let timeout = s
        .timeout
        .and_then(|d| duration_from(d, "start.timeout", &mut v));
    if s.labels.len() > MAX_LABELS {
        v.add(
            "start.labels",
            format!(
                "must hold at most {MAX_LABELS} labels, got {}",
                s.labels.len()
            ),
        );
    }
    for (k, val) in &s.labels {
        if k.is_empty() || k.len() > MAX_NAME_BYTES || val.len() > MAX_NAME_BYTES {
            v.add(
                format!("start.labels[{k:?}]"),
                format!(
                    "keys must be 1 to {MAX_NAME_BYTES} bytes and values at most {MAX_NAME_BYTES}"
                ),
            );
        }
    }
    v.done()?;
    Ok(StartQuery {
        model: s.model,
        messages,
        system_prompt: s.system_prompt,
        params,
        cache,
        rules,
        fallback_models: s.fallback_models,
        timeout,
        labels: s.labels.into_iter().collect::<BTreeMap<_, _>>(),
    })
}

fn params_from(p: pb::GenerationParams, v: &mut Violations) -> GenerationParams {
    if let Some(t) = p.temperature
        && !(0.0..=2.0).contains(&t)
    {
        v.add(
            "start.params.temperature",
            format!("must be between 0 and 2, got {t}"),
        );
    }
    if let Some(t) = p.top_p
        && !(t > 0.0 && t <= 1.0)
    {
        v.add("start.params.top_p", format!("must be in (0, 1], got {t}"));
    }
    if p.stop.len() > MAX_STOP {
        v.add(
            "start.params.stop",
            format!(
                "must hold at most {MAX_STOP} sequences, got {}",
                p.stop.len()
            ),
        );
    }
    for (i, s) in p.stop.iter().enumerate() {
        if s.is_empty() || s.len() > MAX_STOP_BYTES {
            v.add(
                format!("start.params.stop[{i}]"),
                format!("must be 1 to {MAX_STOP_BYTES} bytes, got {}", s.len()),
            );
        }
    }
    GenerationParams {
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        stop: p.stop,
        seed: p.seed,
    }
}

fn cache_from(c: pb::CachePolicy, v: &mut Violations) -> CachePolicy {
    let mode = match pb::CacheMode::try_from(c.mode) {
        Ok(pb::CacheMode::Unspecified | pb::CacheMode::Exact) => CacheMode::Exact,
        Ok(pb::CacheMode::Off) => CacheMode::Off,
        Ok(pb::CacheMode::Semantic) => CacheMode::Semantic,
        Err(_) => {
            v.add("start.cache.mode", format!("unknown cache mode {}", c.mode));
            CacheMode::Exact
        }
    };
    let threshold = c.similarity_threshold;
    if !(0.0..=1.0).contains(&threshold) {
        v.add(
            "start.cache.similarity_threshold",
            format!("must be in (0, 1], or 0 for the default, got {threshold}"),
        );
    }
    if c.namespace.len() > MAX_NAME_BYTES {
        v.add(
            "start.cache.namespace",
            format!("must be at most {MAX_NAME_BYTES} bytes"),
        );
    }
    CachePolicy {
        mode,
        similarity_threshold: if threshold == 0.0 {
            DEFAULT_SIMILARITY
        } else {
            threshold
        },
        namespace: c.namespace,
        refresh: c.refresh,
    }
}

fn rule_from(r: pb::Rule, path: &str, v: &mut Violations) -> Option<Rule> {
    use pb::rule::Trigger;
    if r.name.is_empty() || r.name.len() > MAX_NAME_BYTES {
        v.add(
            format!("{path}.name"),
            format!("must be 1 to {MAX_NAME_BYTES} bytes"),
        );
    }
    if r.switch_to_model.is_empty() {
        v.add(format!("{path}.switch_to_model"), "must name a model alias");
    }
    let trigger = match r.trigger {
        Some(Trigger::CostExceedsUsd(c)) if c.is_finite() && c >= 0.0 => {
            RuleTrigger::CostExceedsUsd(c)
        }
        Some(Trigger::CostExceedsUsd(c)) => {
            v.add(
                format!("{path}.cost_exceeds_usd"),
                format!("must be a non-negative number, got {c}"),
            );
            return None;
        }
        Some(Trigger::FirstTokenLatencyExceeds(d)) => RuleTrigger::FirstTokenLatencyExceeds(
            duration_from(d, &format!("{path}.first_token_latency_exceeds"), v)?,
        ),
        Some(Trigger::OutputTokensExceed(n)) => RuleTrigger::OutputTokensExceed(u64::from(n)),
        None => {
            v.add(
                format!("{path}.trigger"),
                "must set one of cost_exceeds_usd, first_token_latency_exceeds, output_tokens_exceed",
            );
            return None;
        }
    };
    Some(Rule {
        name: r.name,
        trigger,
        switch_to_model: r.switch_to_model,
    })
}

/// Checks a termination reason.
pub fn reason_from(reason: String, field: &str) -> Result<String, Error> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "must be at most {MAX_REASON_BYTES} bytes, got {}",
                reason.len()
            ),
        ));
    }
    Ok(reason)
}

fn role(r: Role) -> pb::Role {
    match r {
        Role::System => pb::Role::System,
        Role::User => pb::Role::User,
        Role::Assistant => pb::Role::Assistant,
    }
}

fn finish(f: FinishReason) -> pb::FinishReason {
    match f {
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::StopSequence => pb::FinishReason::StopSequence,
        FinishReason::ContextWindow => pb::FinishReason::ContextWindow,
    }
}

fn switch(r: SwitchReason) -> pb::SwitchReason {
    match r {
        SwitchReason::Requested => pb::SwitchReason::Requested,
        SwitchReason::Rule => pb::SwitchReason::Rule,
        SwitchReason::Fallback => pb::SwitchReason::Fallback,
    }
}

fn usage(u: TokenUsage) -> pb::TokenUsage {
    pb::TokenUsage {
        input_tokens: u.input,
        output_tokens: u.output,
    }
}

/// A logged error as a stream error.
pub fn error(e: &QueryError) -> pb::StreamError {
    stream_error(e.to_error())
}

/// A state as its protobuf enum.
pub fn state(s: QueryState) -> pb::QueryState {
    match s {
        QueryState::Running => pb::QueryState::Running,
        QueryState::Paused => pb::QueryState::Paused,
        QueryState::Completed => pb::QueryState::Completed,
        QueryState::Terminated => pb::QueryState::Terminated,
        QueryState::Failed => pb::QueryState::Failed,
    }
}

/// A protobuf state filter; UNSPECIFIED is none.
pub fn state_filter(s: i32) -> Result<Option<QueryState>, Error> {
    Ok(match pb::QueryState::try_from(s) {
        Ok(pb::QueryState::Unspecified) => None,
        Ok(pb::QueryState::Running) => Some(QueryState::Running),
        Ok(pb::QueryState::Paused) => Some(QueryState::Paused),
        Ok(pb::QueryState::Completed) => Some(QueryState::Completed),
        Ok(pb::QueryState::Terminated) => Some(QueryState::Terminated),
        Ok(pb::QueryState::Failed) => Some(QueryState::Failed),
        Err(_) => return Err(Error::invalid("state", format!("unknown query state {s}"))),
    })
}

/// One logged event of query `query_id`.
pub fn event(query_id: &str, e: Event) -> pb::SessionEvent {
    use pb::session_event::Kind;
    let kind = match e.kind {
        EventKind::Started { model } => Kind::Started(pb::StartedEvent {
            query_id: query_id.to_owned(),
            model,
        }),
        EventKind::Delta {
            seq,
            text,
            model,
            cached,
        } => Kind::Delta(pb::DeltaEvent {
            seq,
            text,
            model,
            cached,
        }),
        EventKind::Paused { seq } => Kind::Paused(pb::PausedEvent { seq }),
        EventKind::Resumed { seq, model } => Kind::Resumed(pb::ResumedEvent { seq, model }),
        EventKind::ModelSwitched {
            from,
            to,
            seq,
            reason,
        } => Kind::ModelSwitched(pb::ModelSwitchedEvent {
            from_model: from,
            to_model: to,
            seq,
            reason: switch(reason) as i32,
        }),
        EventKind::Usage { usage: u, cost_usd } => Kind::Usage(pb::UsageEvent {
            usage: Some(usage(u)),
            cost_usd,
        }),
        EventKind::Completed {
            finish_reason,
            text,
            usage: u,
            cost_usd,
        } => Kind::Completed(pb::CompletedEvent {
            finish_reason: finish(finish_reason) as i32,
            text,
            usage: Some(usage(u)),
            cost_usd,
        }),
        EventKind::Failed { error: e } => Kind::Failed(pb::FailedEvent {
            error: Some(error(&e)),
        }),
        EventKind::Terminated { seq, reason, text } => {
            Kind::Terminated(pb::TerminatedEvent { seq, reason, text })
        }
        EventKind::CacheHit {
            kind,
            similarity,
            source_query_id,
        } => Kind::CacheHit(pb::CacheHitEvent {
            kind: match kind {
                CacheKind::Exact => pb::CacheKind::Exact,
                CacheKind::Semantic => pb::CacheKind::Semantic,
            } as i32,
            similarity,
            source_query_id,
        }),
        EventKind::RuleFired {
            rule,
            detail,
            switch_to_model,
        } => Kind::RuleFired(pb::RuleFiredEvent {
            rule,
            detail,
            switch_to_model,
        }),
        EventKind::CommandRejected { error: e } => {
            Kind::CommandRejected(pb::CommandRejectedEvent {
                error: Some(error(&e)),
            })
        }
        EventKind::Injected { seq, message } => Kind::Injected(pb::InjectedEvent {
            seq,
            message: Some(pb::Message {
                role: role(message.role) as i32,
                content: message.content,
            }),
        }),
    };
    pb::SessionEvent {
        query_id: query_id.to_owned(),
        event_index: e.index,
        time: Some(timestamp(e.time_ms)),
        kind: Some(kind),
    }
}

fn span(s: ModelSpan) -> pb::ModelSpan {
    pb::ModelSpan {
        model: s.model,
        from_seq: s.from_seq,
        to_seq: s.to_seq,
        reason: switch(s.reason) as i32,
        started_at: Some(timestamp(s.started_at_ms)),
    }
}

/// A query's summary, with `text` when asked for.
pub fn info(i: QueryInfo, text: Option<String>) -> pb::QueryInfo {
    pb::QueryInfo {
        query_id: i.id,
        state: state(i.state) as i32,
        model: i.model,
        model_history: i.model_history.into_iter().map(span).collect(),
        usage: Some(usage(i.usage)),
        cost_usd: i.cost_usd,
        delta_count: i.delta_count,
        text: text.unwrap_or_default(),
        finish_reason: i.finish_reason.map_or(0, |f| finish(f) as i32),
        error: i.error.as_ref().map(error),
        created_at: Some(timestamp(i.created_at_ms)),
        first_token_at: i.first_token_at_ms.map(timestamp),
        finished_at: i.finished_at_ms.map(timestamp),
        labels: i.labels.into_iter().collect(),
    }
}

/// A model alias as listed.
pub fn model(m: ModelListing) -> pb::ModelAlias {
    let s = m.spec;
    pb::ModelAlias {
        alias: s.alias,
        provider: match s.provider {
            ProviderKind::Local => pb::ProviderKind::Local,
            ProviderKind::Openai => pb::ProviderKind::Openai,
            ProviderKind::Anthropic => pb::ProviderKind::Anthropic,
        } as i32,
        model_id: s.model_id,
        context_window: s.context_window,
        input_cost_per_token_usd: s.input_cost_per_token_usd,
        output_cost_per_token_usd: s.output_cost_per_token_usd,
        fallbacks: s.fallbacks,
        available: m.unavailable_reason.is_none(),
        unavailable_reason: m.unavailable_reason.unwrap_or_default(),
    }
}
