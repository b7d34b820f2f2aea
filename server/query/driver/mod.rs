//! The driver: the one task that runs a query, from Start to its end.
//!
//! It alone talks to providers and appends to the query's log, and it
//! handles commands between deltas, so every invariant of a session follows
//! from doing one thing at a time:
//!
//! - a delta is appended once, with the next seq, before anything else
//!   happens;
//! - Pause drops the provider stream (cancelling the request or the local
//!   decode loop) and records `Paused{seq}`; nothing reads that stream again;
//! - Resume, SwitchModel, Inject and fallbacks open a new stream that
//!   continues the answer from the transcript (the text since the last
//!   Inject or tool turn goes to the provider as the continuation), so no
//!   text is lost or repeated;
//! - failures are retried with exponential backoff, then the model cools
//!   down and the fallback chain moves on, continuing the same answer;
//! - a turn that ends with tool calls records them and waits for their
//!   results, then the next turn starts with the whole history ([`tools`]).
//!
//! [`segment`] reads one provider stream, [`commands`] handles clients'
//! commands, [`tools`] runs the tool loop.

mod commands;
mod segment;
mod tools;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::engine::Shared;
use super::events::{EventKind, ModelSpan, QueryError};
use super::provider::{Admission, ProviderError};
use super::semantic::SemanticKey;
use super::session::{Control, Query};
use super::settings::ProviderKind;
use super::tools::{OfferedTools, ToolChoice, ToolOutcome, ToolTurn};
use super::types::{
    ChatMessage, FinishReason, QueryState, Rule, StartQuery, SwitchReason, TokenUsage,
};
use super::validate::DEFAULT_MAX_TURNS;
use crate::common::clock::now_ms;
use crate::error::Error;

/// How a stretch of generation ended.
#[derive(Debug)]
enum Outcome {
    /// Keep generating with a new provider stream (after a switch, an
    /// inject, a rule or a tool turn).
    Continue,
    /// The state changed (paused, awaiting tools or finished): look again.
    Stopped,
    /// The provider failed: retry or fall back.
    Failed(ProviderError),
}

/// What the driver is doing when a command arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading a provider stream.
    Streaming,
    /// Paused by a client.
    Paused,
    /// Waiting for tool results.
    AwaitingTools,
}

/// A running query's private state.
#[derive(Debug)]
pub struct Driver {
    query: Arc<Query>,
    shared: Arc<Shared>,
    control: mpsc::Receiver<Control>,
    start: StartQuery,
    /// The conversation sent to providers; grows with Inject and tool
    /// turns.
    conversation: Vec<ChatMessage>,
    /// Byte offset in `text` where the current assistant turn began.
    turn_start: usize,
    text: String,
    seq: u64,
    model: String,
    /// Aliases to try in order, and where the query is in it.
    chain: Vec<String>,
    chain_pos: usize,
    /// Failed calls to the current model in this query (progress between
    /// failures does not reset it: a model that keeps failing mid-answer
    /// gives way to its fallback).
    attempts: u32,
    usage: TokenUsage,
    cost: f64,
    rules: Vec<Rule>,
    fired: Vec<bool>,
    /// Run time left, pauses excluded.
    budget_left: Duration,
    max_tokens: u64,
    injected: bool,
    /// The prompt's embedding, for the semantic cache.
    semantic_key: Option<SemanticKey>,
    /// A place taken in a model's queue (at Start, Resume or a switch) for
    /// the next call to it: (alias, place).
    admission: Option<(String, Admission)>,
    /// The tools the query offers.
    tools: OfferedTools,
    /// How the next turn may use them.
    tool_choice: ToolChoice,
    /// Model turns ended so far, and the most there may be.
    turns: u32,
    max_turns: u32,
    /// The calls of the last turn while any still waits for its result.
    awaiting: Option<ToolTurn>,
    /// Turns in a row in which every call was invalid.
    invalid_turns: u32,
    /// Results of server tools, sent by their tasks.
    tool_results_tx: mpsc::Sender<(String, ToolOutcome)>,
    tool_results: mpsc::Receiver<(String, ToolOutcome)>,
}

impl Driver {
    /// A driver for `query`, which was just recorded as started.
    pub fn new(
        query: Arc<Query>,
        shared: Arc<Shared>,
        control: mpsc::Receiver<Control>,
        start: StartQuery,
        semantic_key: Option<SemanticKey>,
        admitted: (String, Admission),
    ) -> Self {
        let mut chain = vec![start.model.clone()];
        if start.fallback_models.is_empty() {
            chain.extend(shared.registry.fallbacks(&start.model));
        } else {
            chain.extend(start.fallback_models.iter().cloned());
        }
        let mut rules = shared.rules.clone();
        rules.extend(start.rules.iter().cloned());
        let settings = &shared.settings;
        let max_tokens = match start.params.max_tokens {
            0 => settings.default_max_tokens,
            n => n,
        };
        let (tool_results_tx, tool_results) = mpsc::channel(16);
        Driver {
            conversation: start.messages.clone(),
            turn_start: 0,
            text: String::new(),
            seq: 0,
            model: start.model.clone(),
            chain,
            chain_pos: 0,
            attempts: 0,
            usage: TokenUsage::default(),
            cost: 0.0,
            fired: vec![false; rules.len()],
            rules,
            budget_left: start.timeout.unwrap_or(settings.timeout),
            max_tokens: u64::from(max_tokens),
            injected: false,
            semantic_key,
            admission: Some(admitted),
            tools: OfferedTools::new(&start.tools),
            tool_choice: start.tool_choice.clone(),
            turns: 0,
            max_turns: match start.max_turns {
                0 => DEFAULT_MAX_TURNS,
                n => n,
            },
            awaiting: None,
            invalid_turns: 0,
            tool_results_tx,
            tool_results,
            query,
            shared,
            control,
            start,
        }
    }

    /// Whether only models that can call tools may serve the query.
    fn needs_tools(&self) -> bool {
        self.start.needs_tools()
    }

    /// Runs the query to its end, then hands it to the engine to persist
    /// and cache.
    pub async fn run(mut self) {
        let mut delay = Duration::ZERO;
        loop {
            match self.query.state() {
                QueryState::Running => {
                    let began = Instant::now();
                    let span = tracing::info_span!(
                        "model.request",
                        model = %self.model,
                        first_token_ms = tracing::field::Empty,
                    );
                    let outcome = self.segment(delay).instrument(span).await;
                    self.budget_left = self.budget_left.saturating_sub(began.elapsed());
                    delay = match outcome {
                        Outcome::Continue | Outcome::Stopped => Duration::ZERO,
                        Outcome::Failed(e) => self.recover(e),
                    };
                }
                QueryState::Paused => {
                    if !self.wait(Mode::Paused).await {
                        break;
                    }
                }
                QueryState::AwaitingTools => {
                    let began = Instant::now();
                    let going = self.wait(Mode::AwaitingTools).await;
                    // Waiting for tools is run time; a pause is not.
                    self.budget_left = self.budget_left.saturating_sub(began.elapsed());
                    if !going {
                        break;
                    }
                }
                _ => break,
            }
        }
        // Commands sent from now on are refused as "finished", including
        // any still queued (their reply channels close with this).
        let Driver {
            query,
            shared,
            control,
            awaiting,
            ..
        } = self;
        drop(control);
        // Server tools still running stop.
        drop(awaiting);
        shared.finished(&query).await;
    }

    /// Waits, paused or for tool results, until the state changes:
    /// handles commands, server tools' results and calls whose time is
    /// over. False when no command can come any more.
    async fn wait(&mut self, mode: Mode) -> bool {
        let state = self.query.state();
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        // Paused time is not run time.
        let deadline = match mode {
            Mode::AwaitingTools => Instant::now() + self.budget_left,
            _ => far,
        };
        loop {
            let next_call_deadline = self.awaiting.as_ref().and_then(ToolTurn::next_deadline);
            tokio::select! {
                biased;
                cmd = self.control.recv() => match cmd {
                    Some(cmd) => {
                        self.on_command(cmd, mode);
                    }
                    None => return false,
                },
                Some((id, outcome)) = self.tool_results.recv() => self.resolve(&id, outcome),
                () = sleep_until(next_call_deadline.unwrap_or(far)), if next_call_deadline.is_some() => {
                    self.expire_tool_calls();
                }
                () = sleep_until(deadline) => {
                    let limit = self.start.timeout.unwrap_or(self.shared.settings.timeout);
                    self.fail(Error::Timeout(format!(
                        "query ran for its whole timeout of {} ms (pauses excluded) while \
                         awaiting tool results",
                        limit.as_millis()
                    )));
                }
            }
            if self.query.state() != state {
                return true;
            }
        }
    }

    /// Records a model switch after the current seq.
    pub(super) fn switch_to(&mut self, to: String, reason: SwitchReason) {
        let from = std::mem::replace(&mut self.model, to.clone());
        let seq = self.seq;
        let now = now_ms();
        let span = ModelSpan {
            model: to.clone(),
            from_seq: seq + 1,
            to_seq: seq,
            reason,
            started_at_ms: now,
        };
        self.query.push(
            EventKind::ModelSwitched {
                from,
                to: to.clone(),
                seq,
                reason,
            },
            |r| {
                r.info.model = to.clone();
                r.info.model_history.push(span);
            },
        );
        self.attempts = 0;
        if reason != SwitchReason::Fallback {
            self.chain = vec![to.clone()];
            self.chain.extend(self.shared.registry.fallbacks(&to));
            self.chain_pos = 0;
        }
    }

    /// After a failure: the delay before retrying the same model, or a
    /// fallback (no delay), or the query fails.
    pub(super) fn recover(&mut self, error: ProviderError) -> Duration {
        self.attempts += 1;
        metrics::counter!(
            crate::metrics::catalog::QUERY_PROVIDER_ERRORS,
            "model" => self.model.clone(),
            "retryable" => if error.retryable { "true" } else { "false" }
        )
        .increment(1);
        let settings = &self.shared.settings;
        let id = self.query.id();
        // A retry on a model with a queue (the local one) would wait in
        // line again behind everyone: fall back instead.
        let queues = self
            .shared
            .registry
            .get(&self.model)
            .is_ok_and(|e| e.spec.provider == ProviderKind::Local);
        if error.retryable && !queues && self.attempts <= settings.max_retries {
            let backoff = settings
                .retry_backoff
                .saturating_mul(1 << (self.attempts - 1).min(16))
                .min(settings.max_retry_backoff);
            tracing::warn!(query = %id, model = %self.model, attempt = self.attempts, error = %error, ?backoff, "provider failed; retrying");
            return backoff;
        }
        if error.retryable && !queues {
            self.shared.registry.mark_failed(&self.model);
        }
        tracing::warn!(query = %id, model = %self.model, error = %error, "provider failed; falling back");
        while self.chain_pos + 1 < self.chain.len() {
            self.chain_pos += 1;
            let next = self.chain[self.chain_pos].clone();
            if self.shared.registry.unavailable_reason(&next).is_none()
                && self.check_model(&next).is_ok()
            {
                self.switch_to(next, SwitchReason::Fallback);
                return Duration::ZERO;
            }
        }
        self.fail(Error::Provider(format!(
            "{} failed and no fallback could continue: {}",
            self.model, error.message
        )));
        Duration::ZERO
    }

    /// Records the answer as complete.
    pub(super) fn complete(&mut self, finish_reason: FinishReason) {
        // An answer after an Inject belongs to another conversation; one
        // after tool calls depends on what the tools gave.
        if !self.injected && self.turns <= 1 && self.query.info().tool_calls.is_empty() {
            let key = self.semantic_key.take();
            self.shared
                .cache_answer(&self.query, &self.start, finish_reason, key);
        }
        let (usage, cost_usd, text) = (self.usage, self.cost, self.text.clone());
        let turns = self.turns;
        self.query.push(
            EventKind::Completed {
                finish_reason,
                text,
                usage,
                cost_usd,
            },
            |r| {
                r.info.state = QueryState::Completed;
                r.info.turns = turns;
                r.info.finish_reason = Some(finish_reason);
                r.info.finished_at_ms = Some(now_ms());
            },
        );
    }

    /// Records the query as failed.
    pub(super) fn fail(&mut self, error: Error) {
        self.awaiting = None;
        let error = QueryError::from(&error);
        let kept = error.clone();
        self.query.push(EventKind::Failed { error }, |r| {
            r.info.state = QueryState::Failed;
            r.info.error = Some(kept);
            r.info.finished_at_ms = Some(now_ms());
        });
    }
}
