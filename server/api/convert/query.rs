//! `agentd.v1` QueryControlService messages ⇄ the query engine's types.
//!
//! Requests convert structurally here (enum values, required oneofs,
//! durations); their limits and rules are the engine's
//! (`query::validate`). Paths are relative to the message converted.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{duration_from, json_object, proto_struct, timestamp};
use crate::api::error::stream_error;
use crate::error::{Error, Result, Violations};
use crate::pb::v1 as pb;
use crate::query::{
    CacheKind, CacheMode, CachePolicy, ChatMessage, DEFAULT_SIMILARITY, Event, EventKind,
    FinishReason, GenerationParams, ModelAliasSpec, ModelListing, ModelSpan, ProviderKind,
    QueryError, QueryInfo, QueryState, QueryStats, Role, Rule, RuleTrigger, StartQuery,
    SwitchReason, TokenUsage, ToolCall, ToolCallRecord, ToolChoice, ToolLocation, ToolOutcome,
    ToolSpec,
};

/// A Start command: the engine's request, and what the Session stream
/// does when its client goes away.
#[derive(Debug)]
pub struct SessionStart {
    /// The query to start.
    pub query: StartQuery,
    /// Terminate the query when the stream's client disconnects.
    pub terminate_on_disconnect: bool,
}

impl TryFrom<pb::StartCommand> for SessionStart {
    type Error = Error;

    fn try_from(s: pb::StartCommand) -> Result<Self> {
        let pb::StartCommand {
            model,
            messages,
            system_prompt,
            params,
            cache,
            rules,
            fallback_models,
            terminate_on_disconnect,
            timeout,
            labels,
            tools,
            tool_choice,
            max_turns,
        } = s;
        // Every structural problem at once, as the engine reports limits.
        let mut v = Violations::new();
        let mut chat = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            match ChatMessage::try_from(m) {
                Ok(m) => chat.push(m),
                Err(e) => v.absorb(e.within(&format!("messages[{i}]")))?,
            }
        }
        let cache = match cache.map(CachePolicy::try_from).transpose() {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                v.absorb(e.within("cache"))?;
                CachePolicy::default()
            }
        };
        let mut converted_rules = Vec::with_capacity(rules.len());
        for (i, r) in rules.into_iter().enumerate() {
            match Rule::try_from(r) {
                Ok(r) => converted_rules.push(r),
                Err(e) => v.absorb(e.within(&format!("rules[{i}]")))?,
            }
        }
        let timeout = match timeout.map(|d| duration_from(d, "timeout")).transpose() {
            Ok(t) => t,
            Err(e) => {
                v.absorb(e)?;
                None
            }
        };
        let mut specs = Vec::with_capacity(tools.len());
        for (i, t) in tools.into_iter().enumerate() {
            match ToolSpec::try_from(t) {
                Ok(t) => specs.push(t),
                Err(e) => v.absorb(e.within(&format!("tools[{i}]")))?,
            }
        }
        let tool_choice = match tool_choice.map(ToolChoice::try_from).transpose() {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                v.absorb(e.within("tool_choice"))?;
                ToolChoice::Auto
            }
        };
        v.finish()?;
        Ok(SessionStart {
            query: StartQuery {
                model,
                messages: chat,
                system_prompt,
                params: params.map(Into::into).unwrap_or_default(),
                cache,
                rules: converted_rules,
                fallback_models,
                timeout,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                tools: specs,
                tool_choice,
                max_turns,
                // Budgets and chosen ids are the agents engine's, for tasks.
                max_cost_usd: None,
                id: None,
            },
            terminate_on_disconnect,
        })
    }
}

impl TryFrom<pb::Message> for ChatMessage {
    type Error = Error;

    fn try_from(m: pb::Message) -> Result<Self> {
        let pb::Message {
            role,
            content,
            tool_calls,
            tool_call_id,
            is_error,
        } = m;
        let mut v = Violations::new();
        let role = match pb::Role::try_from(role) {
            Ok(pb::Role::System) => Role::System,
            Ok(pb::Role::User) => Role::User,
            Ok(pb::Role::Assistant) => Role::Assistant,
            Ok(pb::Role::Tool) => Role::Tool,
            Ok(pb::Role::Unspecified) | Err(_) => {
                v.add(
                    "role",
                    "must be one of ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL",
                );
                Role::User
            }
        };
        let mut calls = Vec::with_capacity(tool_calls.len());
        for (i, c) in tool_calls.into_iter().enumerate() {
            match ToolCall::try_from(c) {
                Ok(c) => calls.push(c),
                Err(e) => v.absorb(e.within(&format!("tool_calls[{i}]")))?,
            }
        }
        v.finish()?;
        Ok(ChatMessage {
            role,
            content,
            tool_calls: calls,
            tool_call_id,
            is_error,
        })
    }
}

impl From<ChatMessage> for pb::Message {
    fn from(m: ChatMessage) -> Self {
        let ChatMessage {
            role,
            content,
            tool_calls,
            tool_call_id,
            is_error,
        } = m;
        let role = match role {
            Role::System => pb::Role::System,
            Role::User => pb::Role::User,
            Role::Assistant => pb::Role::Assistant,
            Role::Tool => pb::Role::Tool,
        };
        pb::Message {
            role: role.into(),
            content,
            tool_calls: tool_calls.into_iter().map(Into::into).collect(),
            tool_call_id,
            is_error,
        }
    }
}

/// JSON from a protobuf Struct with whole numbers as integers: Struct
/// carries every number as a double, and a schema's `"maxLength": 10` or a
/// call's `{"n": 3}` must stay integers.
fn json_from_struct(s: prost_types::Struct, field: &str) -> Result<Map<String, Value>> {
    fn integral(v: Value) -> Value {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                _ => Value::Number(n),
            },
            Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect())
            }
            other => other,
        }
    }
    Ok(json_object(s, field)?
        .into_iter()
        .map(|(k, v)| (k, integral(v)))
        .collect())
}

impl TryFrom<pb::ToolCall> for ToolCall {
    type Error = Error;

    fn try_from(c: pb::ToolCall) -> Result<Self> {
        let pb::ToolCall {
            id,
            name,
            arguments,
            invalid_arguments,
        } = c;
        let arguments = if invalid_arguments.is_empty() {
            Value::Object(
                arguments
                    .map(|a| json_from_struct(a, "arguments"))
                    .transpose()?
                    .unwrap_or_default(),
            )
        } else if arguments.is_some() {
            return Err(Error::invalid(
                "invalid_arguments",
                "set either arguments or invalid_arguments, not both",
            ));
        } else {
            Value::String(invalid_arguments)
        };
        Ok(ToolCall {
            id,
            name,
            arguments,
        })
    }
}

impl From<ToolCall> for pb::ToolCall {
    fn from(c: ToolCall) -> Self {
        let ToolCall {
            id,
            name,
            arguments,
        } = c;
        let (arguments, invalid_arguments) = match arguments {
            Value::Object(map) => (Some(proto_struct(map)), String::new()),
            Value::String(raw) => (None, raw),
            other => (None, other.to_string()),
        };
        pb::ToolCall {
            id,
            name,
            arguments,
            invalid_arguments,
        }
    }
}

impl TryFrom<pb::ToolDefinition> for ToolSpec {
    type Error = Error;

    fn try_from(t: pb::ToolDefinition) -> Result<Self> {
        let pb::ToolDefinition {
            name,
            description,
            parameters,
            location,
            worker_capability,
            timeout,
        } = t;
        let mut v = Violations::new();
        let location = match pb::ToolLocation::try_from(location) {
            Ok(pb::ToolLocation::Unspecified | pb::ToolLocation::Client) => ToolLocation::Client,
            Ok(pb::ToolLocation::Server) => ToolLocation::Server,
            Ok(pb::ToolLocation::Worker) => ToolLocation::Worker,
            Err(_) => {
                v.add("location", format!("unknown tool location {location}"));
                ToolLocation::Client
            }
        };
        let parameters = match parameters.map(|p| json_from_struct(p, "parameters")) {
            None => Value::Null,
            Some(Ok(map)) => Value::Object(map),
            Some(Err(e)) => {
                v.absorb(e)?;
                Value::Null
            }
        };
        let timeout = match timeout.map(|d| duration_from(d, "timeout")).transpose() {
            Ok(t) => t,
            Err(e) => {
                v.absorb(e)?;
                None
            }
        };
        v.finish()?;
        Ok(ToolSpec {
            name,
            description,
            parameters,
            location,
            worker_capability,
            timeout,
        })
    }
}

impl From<ToolSpec> for pb::ToolDefinition {
    fn from(t: ToolSpec) -> Self {
        let ToolSpec {
            name,
            description,
            parameters,
            location,
            worker_capability,
            timeout,
        } = t;
        pb::ToolDefinition {
            name,
            description,
            parameters: match parameters {
                Value::Object(map) => Some(proto_struct(map)),
                _ => None,
            },
            location: pb::ToolLocation::from(location).into(),
            worker_capability,
            timeout: timeout.map(super::duration),
        }
    }
}

impl TryFrom<pb::ToolChoice> for ToolChoice {
    type Error = Error;

    fn try_from(c: pb::ToolChoice) -> Result<Self> {
        let pb::ToolChoice { mode, name } = c;
        let choice = match pb::ToolChoiceMode::try_from(mode) {
            Ok(pb::ToolChoiceMode::Unspecified | pb::ToolChoiceMode::Auto) => ToolChoice::Auto,
            Ok(pb::ToolChoiceMode::None) => ToolChoice::None,
            Ok(pb::ToolChoiceMode::Required) => ToolChoice::Required,
            Ok(pb::ToolChoiceMode::Named) => {
                if name.is_empty() {
                    return Err(Error::invalid(
                        "name",
                        "TOOL_CHOICE_MODE_NAMED needs a tool name",
                    ));
                }
                return Ok(ToolChoice::Named(name));
            }
            Err(_) => {
                return Err(Error::invalid(
                    "mode",
                    format!("unknown tool choice mode {mode}"),
                ));
            }
        };
        if !name.is_empty() {
            return Err(Error::invalid("name", "is only for TOOL_CHOICE_MODE_NAMED"));
        }
        Ok(choice)
    }
}

impl From<ToolLocation> for pb::ToolLocation {
    fn from(l: ToolLocation) -> Self {
        match l {
            ToolLocation::Client => pb::ToolLocation::Client,
            ToolLocation::Server => pb::ToolLocation::Server,
            ToolLocation::Worker => pb::ToolLocation::Worker,
        }
    }
}

impl From<ToolCallRecord> for pb::ToolCallInfo {
    fn from(r: ToolCallRecord) -> Self {
        let ToolCallRecord {
            call,
            location,
            turn,
            outcome,
        } = r;
        let done = outcome.is_some();
        let ToolOutcome { content, is_error } = outcome.unwrap_or(ToolOutcome {
            content: String::new(),
            is_error: false,
        });
        pb::ToolCallInfo {
            call: Some(call.into()),
            location: pb::ToolLocation::from(location).into(),
            turn,
            done,
            result: content,
            is_error,
        }
    }
}

/// The outcome of a ToolResultCommand or SubmitToolResult: one of
/// `result` or `error` must be set.
pub fn tool_outcome(result: Option<String>, error: Option<String>) -> Result<ToolOutcome> {
    match (result, error) {
        (Some(content), None) => Ok(ToolOutcome::ok(content)),
        (None, Some(content)) => Ok(ToolOutcome::error(content)),
        _ => Err(Error::invalid("outcome", "must set result or error")),
    }
}

impl From<pb::GenerationParams> for GenerationParams {
    fn from(p: pb::GenerationParams) -> Self {
        let pb::GenerationParams {
            max_tokens,
            temperature,
            top_p,
            stop,
            seed,
        } = p;
        GenerationParams {
            max_tokens,
            temperature,
            top_p,
            stop,
            seed,
        }
    }
}

impl TryFrom<pb::CachePolicy> for CachePolicy {
    type Error = Error;

    fn try_from(c: pb::CachePolicy) -> Result<Self> {
        let pb::CachePolicy {
            mode,
            similarity_threshold,
            namespace,
            refresh,
        } = c;
        let mode = match pb::CacheMode::try_from(mode) {
            Ok(pb::CacheMode::Unspecified | pb::CacheMode::Exact) => CacheMode::Exact,
            Ok(pb::CacheMode::Off) => CacheMode::Off,
            Ok(pb::CacheMode::Semantic) => CacheMode::Semantic,
            Err(_) => return Err(Error::invalid("mode", format!("unknown cache mode {mode}"))),
        };
        Ok(CachePolicy {
            mode,
            // 0 is "the default", as query.proto documents.
            similarity_threshold: if similarity_threshold == 0.0 {
                DEFAULT_SIMILARITY
            } else {
                similarity_threshold
            },
            namespace,
            refresh,
        })
    }
}

impl TryFrom<pb::Rule> for Rule {
    type Error = Error;

    fn try_from(r: pb::Rule) -> Result<Self> {
        use pb::rule::Trigger;
        let pb::Rule {
            name,
            trigger,
            switch_to_model,
        } = r;
        let trigger = match trigger {
            Some(Trigger::CostExceedsUsd(c)) => RuleTrigger::CostExceedsUsd(c),
            Some(Trigger::FirstTokenLatencyExceeds(d)) => RuleTrigger::FirstTokenLatencyExceeds(
                duration_from(d, "first_token_latency_exceeds")?,
            ),
            Some(Trigger::OutputTokensExceed(n)) => RuleTrigger::OutputTokensExceed(u64::from(n)),
            None => {
                return Err(Error::invalid(
                    "trigger",
                    "must set one of cost_exceeds_usd, first_token_latency_exceeds, \
                     output_tokens_exceed",
                ));
            }
        };
        Ok(Rule {
            name,
            trigger,
            switch_to_model,
        })
    }
}

impl From<FinishReason> for pb::FinishReason {
    fn from(f: FinishReason) -> Self {
        match f {
            FinishReason::Stop => pb::FinishReason::Stop,
            FinishReason::Length => pb::FinishReason::Length,
            FinishReason::StopSequence => pb::FinishReason::StopSequence,
            FinishReason::ContextWindow => pb::FinishReason::ContextWindow,
            FinishReason::MaxTurns => pb::FinishReason::MaxTurns,
        }
    }
}

impl From<SwitchReason> for pb::SwitchReason {
    fn from(r: SwitchReason) -> Self {
        match r {
            SwitchReason::Requested => pb::SwitchReason::Requested,
            SwitchReason::Rule => pb::SwitchReason::Rule,
            SwitchReason::Fallback => pb::SwitchReason::Fallback,
        }
    }
}

impl From<CacheKind> for pb::CacheKind {
    fn from(k: CacheKind) -> Self {
        match k {
            CacheKind::Exact => pb::CacheKind::Exact,
            CacheKind::Semantic => pb::CacheKind::Semantic,
        }
    }
}

impl From<QueryState> for pb::QueryState {
    fn from(s: QueryState) -> Self {
        match s {
            QueryState::Running => pb::QueryState::Running,
            QueryState::Paused => pb::QueryState::Paused,
            QueryState::Completed => pb::QueryState::Completed,
            QueryState::Terminated => pb::QueryState::Terminated,
            QueryState::Failed => pb::QueryState::Failed,
            QueryState::AwaitingTools => pb::QueryState::AwaitingTools,
        }
    }
}

/// A ListQueries state filter; UNSPECIFIED is none.
pub fn state_filter(s: i32) -> Result<Option<QueryState>> {
    Ok(match pb::QueryState::try_from(s) {
        Ok(pb::QueryState::Unspecified) => None,
        Ok(pb::QueryState::Running) => Some(QueryState::Running),
        Ok(pb::QueryState::Paused) => Some(QueryState::Paused),
        Ok(pb::QueryState::Completed) => Some(QueryState::Completed),
        Ok(pb::QueryState::Terminated) => Some(QueryState::Terminated),
        Ok(pb::QueryState::Failed) => Some(QueryState::Failed),
        Ok(pb::QueryState::AwaitingTools) => Some(QueryState::AwaitingTools),
        Err(_) => return Err(Error::invalid("state", format!("unknown query state {s}"))),
    })
}

impl From<TokenUsage> for pb::TokenUsage {
    fn from(u: TokenUsage) -> Self {
        let TokenUsage { input, output } = u;
        pb::TokenUsage {
            input_tokens: input,
            output_tokens: output,
        }
    }
}

impl From<&QueryError> for pb::StreamError {
    fn from(e: &QueryError) -> Self {
        stream_error(e.to_error())
    }
}

/// One logged event of query `query_id`.
pub fn event(query_id: &str, e: Event) -> pb::SessionEvent {
    use pb::session_event::Kind;
    let Event {
        index,
        time_ms,
        kind,
    } = e;
    let kind = match kind {
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
            reason: pb::SwitchReason::from(reason).into(),
        }),
        EventKind::Usage { usage, cost_usd } => Kind::Usage(pb::UsageEvent {
            usage: Some(usage.into()),
            cost_usd,
        }),
        EventKind::Completed {
            finish_reason,
            text,
            usage,
            cost_usd,
        } => Kind::Completed(pb::CompletedEvent {
            finish_reason: pb::FinishReason::from(finish_reason).into(),
            text,
            usage: Some(usage.into()),
            cost_usd,
        }),
        EventKind::Failed { error } => Kind::Failed(pb::FailedEvent {
            error: Some((&error).into()),
        }),
        EventKind::Terminated { seq, reason, text } => {
            Kind::Terminated(pb::TerminatedEvent { seq, reason, text })
        }
        EventKind::CacheHit {
            kind,
            similarity,
            source_query_id,
        } => Kind::CacheHit(pb::CacheHitEvent {
            kind: pb::CacheKind::from(kind).into(),
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
        EventKind::CommandRejected { error } => Kind::CommandRejected(pb::CommandRejectedEvent {
            error: Some((&error).into()),
        }),
        EventKind::Injected { seq, message } => Kind::Injected(pb::InjectedEvent {
            seq,
            message: Some(message.into()),
        }),
        EventKind::Queued { model, position } => Kind::Queued(pb::QueuedEvent { model, position }),
        EventKind::ToolCall {
            call,
            location,
            seq,
            turn,
        } => {
            let pb::ToolCall {
                id,
                name,
                arguments,
                invalid_arguments,
            } = call.into();
            Kind::ToolCall(pb::ToolCallEvent {
                call_id: id,
                name,
                arguments,
                invalid_arguments,
                seq,
                location: pb::ToolLocation::from(location).into(),
                turn,
            })
        }
        EventKind::ToolResult {
            call_id,
            name,
            outcome: ToolOutcome { content, is_error },
        } => Kind::ToolResult(pb::ToolResultEvent {
            call_id,
            name,
            content,
            is_error,
        }),
    };
    pb::SessionEvent {
        query_id: query_id.to_owned(),
        event_index: index,
        time: Some(timestamp(time_ms)),
        kind: Some(kind),
    }
}

impl From<ModelSpan> for pb::ModelSpan {
    fn from(s: ModelSpan) -> Self {
        let ModelSpan {
            model,
            from_seq,
            to_seq,
            reason,
            started_at_ms,
        } = s;
        pb::ModelSpan {
            model,
            from_seq,
            to_seq,
            reason: pb::SwitchReason::from(reason).into(),
            started_at: Some(timestamp(started_at_ms)),
        }
    }
}

/// A query's summary, with `text` when asked for.
pub fn info(i: QueryInfo, text: Option<String>) -> pb::QueryInfo {
    let QueryInfo {
        id,
        state,
        model,
        model_history,
        usage,
        cost_usd,
        delta_count,
        finish_reason,
        error,
        created_at_ms,
        first_token_at_ms,
        finished_at_ms,
        labels,
        turns,
        tool_calls,
    } = i;
    pb::QueryInfo {
        query_id: id,
        state: pb::QueryState::from(state).into(),
        model,
        model_history: model_history.into_iter().map(Into::into).collect(),
        usage: Some(usage.into()),
        cost_usd,
        delta_count,
        text: text.unwrap_or_default(),
        finish_reason: finish_reason.map_or(0, |f| pb::FinishReason::from(f).into()),
        error: error.as_ref().map(Into::into),
        created_at: Some(timestamp(created_at_ms)),
        first_token_at: first_token_at_ms.map(timestamp),
        finished_at: finished_at_ms.map(timestamp),
        labels: labels.into_iter().collect(),
        turns,
        tool_calls: tool_calls.into_iter().map(Into::into).collect(),
    }
}

impl From<ModelListing> for pb::ModelAlias {
    fn from(m: ModelListing) -> Self {
        let ModelListing {
            spec,
            unavailable_reason,
        } = m;
        let supports_tools = spec.supports_tools();
        let ModelAliasSpec {
            alias,
            provider,
            model_id,
            // Where and how the provider is reached stays on the server.
            base_url: _,
            api_key_env: _,
            api_key_file: _,
            path: _,
            context_window,
            input_cost_per_token_usd,
            output_cost_per_token_usd,
            fallbacks,
            supports_tools: _,
        } = spec;
        let provider = match provider {
            ProviderKind::Local => pb::ProviderKind::Local,
            ProviderKind::Openai => pb::ProviderKind::Openai,
            ProviderKind::Anthropic => pb::ProviderKind::Anthropic,
        };
        pb::ModelAlias {
            alias,
            provider: provider.into(),
            model_id,
            context_window,
            input_cost_per_token_usd,
            output_cost_per_token_usd,
            fallbacks,
            available: unavailable_reason.is_none(),
            unavailable_reason: unavailable_reason.unwrap_or_default(),
            supports_tools,
        }
    }
}

impl From<QueryStats> for pb::GetQueryStatsResponse {
    fn from(s: QueryStats) -> Self {
        let cache_hit_rate = s.hit_rate();
        let QueryStats {
            running,
            paused,
            awaiting_tools,
            started,
            exact_hits,
            exact_misses,
            semantic_hits,
            semantic_misses,
        } = s;
        pb::GetQueryStatsResponse {
            running,
            paused,
            started,
            exact_cache_hits: exact_hits,
            exact_cache_misses: exact_misses,
            semantic_cache_hits: semantic_hits,
            semantic_cache_misses: semantic_misses,
            cache_hit_rate,
            awaiting_tools,
        }
    }
}
