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
//!   Inject goes to the provider as the continuation), so no text is lost or
//!   repeated;
//! - failures are retried with exponential backoff, then the model cools
//!   down and the fallback chain moves on, continuing the same answer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::engine::{Shared, Switched};
use super::events::{EventKind, ModelSpan, QueryError};
use super::models::ModelEntry;
use super::provider::{
    Admission, GenerationRequest, ProviderError, ProviderEvent, estimate_tokens,
};
use super::semantic::SemanticKey;
use super::session::{Control, Query};
use super::settings::ProviderKind;
use super::types::{
    ChatMessage, FinishReason, QueryState, Role, Rule, RuleTrigger, StartQuery, SwitchReason,
    TokenUsage,
};
use crate::common::clock::now_ms;
use crate::error::Error;

/// How a stretch of generation ended.
#[derive(Debug)]
enum Outcome {
    /// Keep generating with a new provider stream (after a switch, an
    /// inject or a rule).
    Continue,
    /// The state changed (paused or finished): look again.
    Stopped,
    /// The provider failed: retry or fall back.
    Failed(ProviderError),
}

/// Tokens of the provider call in progress, and how much of them is
/// already in the query's totals.
#[derive(Debug)]
struct Segment {
    entry: ModelEntry,
    input_estimate: u64,
    deltas: u64,
    reported: Option<TokenUsage>,
    counted: TokenUsage,
}

impl Segment {
    /// The provider's figures when it sent them, else estimates: the
    /// prompt at four bytes a token, one token a delta.
    fn total(&self) -> TokenUsage {
        self.reported.unwrap_or(TokenUsage {
            input: self.input_estimate,
            output: self.deltas,
        })
    }

    /// What is not yet counted.
    fn pending(&self) -> TokenUsage {
        let total = self.total();
        TokenUsage {
            input: total.input.saturating_sub(self.counted.input),
            output: total.output.saturating_sub(self.counted.output),
        }
    }
}

/// A running query's private state.
#[derive(Debug)]
pub struct Driver {
    query: Arc<Query>,
    shared: Arc<Shared>,
    control: mpsc::Receiver<Control>,
    start: StartQuery,
    /// The conversation sent to providers; grows with Inject.
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
            query,
            shared,
            control,
            start,
        }
    }

    /// Runs the query to its end, then hands it to the engine to persist
    /// and cache.
    pub async fn run(mut self) {
        let mut delay = Duration::ZERO;
        loop {
            match self.query.state() {
                QueryState::Running => {
                    let began = Instant::now();
                    let outcome = self.segment(delay).await;
                    self.budget_left = self.budget_left.saturating_sub(began.elapsed());
                    delay = match outcome {
                        Outcome::Continue | Outcome::Stopped => Duration::ZERO,
                        Outcome::Failed(e) => self.recover(e),
                    };
                }
                QueryState::Paused => match self.control.recv().await {
                    Some(cmd) => {
                        self.on_command(cmd, false);
                    }
                    None => break,
                },
                _ => break,
            }
        }
        // Commands sent from now on are refused as "finished", including
        // any still queued (their reply channels close with this).
        let Driver {
            query,
            shared,
            control,
            ..
        } = self;
        drop(control);
        shared.finished(&query).await;
    }

    /// Generates until a command, a rule, the end of the answer or a
    /// failure stops this provider stream.
    async fn segment(&mut self, delay: Duration) -> Outcome {
        let deadline = Instant::now() + self.budget_left;
        let entry = match self.shared.registry.get(&self.model) {
            Ok(entry) => entry.clone(),
            Err(e) => return Outcome::Failed(ProviderError::fatal(e.to_string())),
        };
        if let Some(reason) = self.shared.registry.unavailable_reason(&self.model) {
            return Outcome::Failed(ProviderError::fatal(format!("unavailable: {reason}")));
        }
        let wake = Instant::now() + delay;
        while Instant::now() < wake {
            tokio::select! {
                biased;
                cmd = self.control.recv() => {
                    if let Some(cmd) = cmd
                        && let Some(outcome) = self.on_command(cmd, true)
                    {
                        return outcome;
                    }
                }
                () = sleep_until(wake) => {}
            }
        }
        let remaining = self.max_tokens.saturating_sub(self.usage.output);
        if remaining == 0 {
            self.complete(FinishReason::Length);
            return Outcome::Stopped;
        }
        let request = GenerationRequest {
            model_id: entry.spec.model_id.clone(),
            system: self.start.system_prompt.clone(),
            messages: self.conversation.clone(),
            continuation: self.text[self.turn_start..].to_owned(),
            params: super::types::GenerationParams {
                max_tokens: u32::try_from(remaining).unwrap_or(u32::MAX),
                ..self.start.params.clone()
            },
        };
        let prompt_bytes: usize = request.system.len()
            + request.continuation.len()
            + request
                .messages
                .iter()
                .map(|m| m.content.len())
                .sum::<usize>();
        let mut segment = Segment {
            input_estimate: estimate_tokens(prompt_bytes),
            entry: entry.clone(),
            deltas: 0,
            reported: None,
            counted: TokenUsage::default(),
        };
        // The place taken for this model, or one taken now: a full queue
        // is a failure this model will not retry (the fallback chain may
        // move on).
        let admission = match self.admission.take() {
            Some((model, admission)) if model == self.model => admission,
            _ => match entry.provider.admit() {
                Ok(admission) => admission,
                Err(e) => return Outcome::Failed(e),
            },
        };
        let mut stream = entry.provider.generate(request, admission);
        let started = Instant::now();
        // When the model started on this call: now, unless it queues it.
        let mut running_since = Some(started);
        let mut finish = None;
        loop {
            let waiting_first = segment.deltas == 0;
            let first_token_deadline = self.first_token_deadline(started, running_since);
            tokio::select! {
                biased;
                cmd = self.control.recv() => {
                    let Some(cmd) = cmd else { continue };
                    self.account(&mut segment);
                    if let Some(outcome) = self.on_command(cmd, true) {
                        return outcome;
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(ProviderEvent::Queued(position))) => {
                        running_since = None;
                        let model = self.model.clone();
                        self.query.push(EventKind::Queued { model, position }, |_| {});
                    }
                    Some(Ok(ProviderEvent::Started)) => running_since = Some(Instant::now()),
                    Some(Ok(ProviderEvent::Delta(text))) => {
                        self.delta(text);
                        segment.deltas += 1;
                        if let Some(i) = self.due_rule(&segment, None) {
                            self.account(&mut segment);
                            self.fire(i);
                            return Outcome::Continue;
                        }
                    }
                    Some(Ok(ProviderEvent::Usage(usage))) => segment.reported = Some(usage),
                    Some(Ok(ProviderEvent::Finished(reason))) => finish = Some(reason),
                    Some(Err(e)) => {
                        self.account(&mut segment);
                        return Outcome::Failed(e);
                    }
                    None => {
                        self.account(&mut segment);
                        return match finish {
                            Some(reason) => {
                                self.complete(reason);
                                Outcome::Stopped
                            }
                            None => Outcome::Failed(ProviderError::retryable(
                                "the provider closed the stream before the answer finished",
                            )),
                        };
                    }
                },
                () = sleep_until(first_token_deadline), if waiting_first => {
                    self.account(&mut segment);
                    let waited = started.elapsed();
                    if let Some(i) = self.due_rule(&segment, Some(waited)) {
                        self.fire(i);
                        return Outcome::Continue;
                    }
                    return Outcome::Failed(ProviderError::retryable(format!(
                        "no first token within {} ms",
                        waited.as_millis()
                    )));
                }
                () = sleep_until(deadline) => {
                    self.account(&mut segment);
                    let limit = self.start.timeout.unwrap_or(self.shared.settings.timeout);
                    self.fail(Error::Timeout(format!(
                        "query ran for its whole timeout of {} ms (pauses excluded)",
                        limit.as_millis()
                    )));
                    return Outcome::Stopped;
                }
            }
        }
    }

    /// When a model that has sent nothing has waited too long: the
    /// configured first-token timeout after the model started on the call
    /// (time in its queue does not count), or sooner when a first-token
    /// rule would fire (rules count from the request: what the caller
    /// waits). Far away while the call is queued and no rule applies.
    fn first_token_deadline(&self, requested: Instant, running_since: Option<Instant>) -> Instant {
        let far = requested + Duration::from_secs(365 * 24 * 3600);
        let mut deadline =
            running_since.map_or(far, |t| t + self.shared.settings.first_token_timeout);
        for (i, rule) in self.rules.iter().enumerate() {
            if let RuleTrigger::FirstTokenLatencyExceeds(d) = rule.trigger
                && !self.fired[i]
                && rule.switch_to_model != self.model
            {
                deadline = deadline.min(requested + d);
            }
        }
        deadline
    }

    /// Appends one delta.
    fn delta(&mut self, text: String) {
        self.seq += 1;
        self.text.push_str(&text);
        let kind = EventKind::Delta {
            seq: self.seq,
            text,
            model: self.model.clone(),
            cached: false,
        };
        self.query.push(kind, |_| {});
    }

    /// Adds what `segment` produced since last counted to the totals and
    /// records a Usage event if anything changed.
    fn account(&mut self, segment: &mut Segment) {
        let pending = segment.pending();
        if pending == TokenUsage::default() {
            return;
        }
        segment.counted += pending;
        self.usage += pending;
        self.cost += segment.entry.cost(pending);
        let (usage, cost_usd) = (self.usage, self.cost);
        self.query.push(EventKind::Usage { usage, cost_usd }, |r| {
            r.info.usage = usage;
            r.info.cost_usd = cost_usd;
        });
    }

    /// The first rule that should fire now, if any. `waited` is how long
    /// the current model has gone without a first token.
    fn due_rule(&self, segment: &Segment, waited: Option<Duration>) -> Option<usize> {
        let pending = segment.pending();
        let cost = self.cost + segment.entry.cost(pending);
        let output = self.usage.output + pending.output;
        self.rules.iter().enumerate().position(|(i, rule)| {
            !self.fired[i]
                && rule.switch_to_model != self.model
                && match rule.trigger {
                    RuleTrigger::CostExceedsUsd(limit) => cost > limit,
                    RuleTrigger::OutputTokensExceed(limit) => output > limit,
                    RuleTrigger::FirstTokenLatencyExceeds(limit) => {
                        waited.is_some_and(|w| w >= limit)
                    }
                }
        })
    }

    /// Fires rule `i`: records it and switches model.
    fn fire(&mut self, i: usize) {
        self.fired[i] = true;
        let rule = self.rules[i].clone();
        let detail = match rule.trigger {
            RuleTrigger::CostExceedsUsd(limit) => {
                format!("cost {:.6} USD > {limit} USD", self.cost)
            }
            RuleTrigger::OutputTokensExceed(limit) => {
                format!("output tokens {} > {limit}", self.usage.output)
            }
            RuleTrigger::FirstTokenLatencyExceeds(limit) => format!(
                "no first token from {} within {} ms",
                self.model,
                limit.as_millis()
            ),
        };
        tracing::info!(query = %self.query.id(), rule = %rule.name, %detail, to = %rule.switch_to_model, "rule fired");
        self.query.push(
            EventKind::RuleFired {
                rule: rule.name,
                detail,
                switch_to_model: rule.switch_to_model.clone(),
            },
            |_| {},
        );
        self.switch_to(rule.switch_to_model, SwitchReason::Rule);
    }

    /// Records a model switch after the current seq.
    fn switch_to(&mut self, to: String, reason: SwitchReason) {
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

    /// Handles a command. `running` says whether a provider stream is
    /// open. Returns how the current stream must end, or `None` when the
    /// command was refused (or, while paused, changed nothing that needs a
    /// stream).
    fn on_command(&mut self, cmd: Control, running: bool) -> Option<Outcome> {
        let id = self.query.id();
        let seq = self.seq;
        match cmd {
            Control::Pause(reply) => {
                if !running {
                    let _ = reply.send(Err(Error::WrongState(format!(
                        "query {id} is already paused"
                    ))));
                    return None;
                }
                self.query.push(EventKind::Paused { seq }, |r| {
                    r.info.state = QueryState::Paused;
                });
                let _ = reply.send(Ok(seq));
                Some(Outcome::Stopped)
            }
            Control::Resume { model, reply } => {
                if running {
                    let _ = reply.send(Err(Error::WrongState(format!(
                        "query {id} is running; only a paused query can be resumed"
                    ))));
                    return None;
                }
                let target = model.clone().unwrap_or_else(|| self.model.clone());
                if let Err(e) = self.take_place(&target) {
                    let _ = reply.send(Err(e));
                    return None;
                }
                if let Some(model) = model.filter(|m| *m != self.model) {
                    self.switch_to(model, SwitchReason::Requested);
                }
                self.resume();
                let _ = reply.send(Ok(self.model.clone()));
                Some(Outcome::Continue)
            }
            Control::SwitchModel { model, reply } => {
                if model == self.model {
                    let _ = reply.send(Err(Error::invalid(
                        "model",
                        format!("query {id} already runs on {model:?}"),
                    )));
                    return None;
                }
                // Running: the new model is called at once, so it must have
                // room; paused: Resume will ask.
                let checked = if running {
                    self.take_place(&model)
                } else {
                    self.shared.registry.get(&model).map(drop)
                };
                if let Err(e) = checked {
                    let _ = reply.send(Err(e));
                    return None;
                }
                let from = self.model.clone();
                self.switch_to(model, SwitchReason::Requested);
                let _ = reply.send(Ok(Switched {
                    from_model: from,
                    seq,
                }));
                running.then_some(Outcome::Continue)
            }
            Control::Inject { message, reply } => {
                // The answer goes on in a new call to the model: it needs a
                // place in the model's queue.
                if let Err(e) = self.take_place(&self.model.clone()) {
                    let _ = reply.send(Err(e));
                    return None;
                }
                let pushed = message.clone();
                self.query.push(
                    EventKind::Injected {
                        seq,
                        message: pushed,
                    },
                    |_| {},
                );
                let answer = &self.text[self.turn_start..];
                if !answer.is_empty() {
                    self.conversation
                        .push(ChatMessage::new(Role::Assistant, answer));
                }
                self.conversation.push(message);
                self.turn_start = self.text.len();
                self.injected = true;
                if !running {
                    self.resume();
                }
                let _ = reply.send(Ok(seq));
                Some(Outcome::Continue)
            }
            Control::Terminate { reason, reply } => {
                let text = self.text.clone();
                self.query.push(
                    EventKind::Terminated {
                        seq,
                        reason: reason.clone(),
                        text,
                    },
                    |r| {
                        r.info.state = QueryState::Terminated;
                        r.info.finished_at_ms = Some(now_ms());
                    },
                );
                let _ = reply.send(Ok(seq));
                Some(Outcome::Stopped)
            }
        }
    }

    /// Takes a place in `model`'s queue for the next call (a command that
    /// makes the query generate on it): NotFound for an unknown alias,
    /// Overloaded when its queue is full, and then the command is refused
    /// and nothing changes.
    fn take_place(&mut self, model: &str) -> Result<(), Error> {
        let entry = self.shared.registry.get(model)?;
        let admission = entry
            .provider
            .admit()
            .map_err(|e| Error::Overloaded(e.message))?;
        self.admission = Some((model.to_owned(), admission));
        Ok(())
    }

    /// Records that a paused query runs again.
    fn resume(&mut self) {
        let (seq, model) = (self.seq, self.model.clone());
        self.query.push(EventKind::Resumed { seq, model }, |r| {
            r.info.state = QueryState::Running;
        });
    }

    /// After a failure: the delay before retrying the same model, or a
    /// fallback (no delay), or the query fails.
    fn recover(&mut self, error: ProviderError) -> Duration {
        self.attempts += 1;
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
            if self.shared.registry.unavailable_reason(&next).is_none() {
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
    fn complete(&mut self, finish_reason: FinishReason) {
        // An answer after an Inject belongs to another conversation.
        if !self.injected {
            let key = self.semantic_key.take();
            self.shared
                .cache_answer(&self.query, &self.start, finish_reason, key);
        }
        let (usage, cost_usd, text) = (self.usage, self.cost, self.text.clone());
        self.query.push(
            EventKind::Completed {
                finish_reason,
                text,
                usage,
                cost_usd,
            },
            |r| {
                r.info.state = QueryState::Completed;
                r.info.finish_reason = Some(finish_reason);
                r.info.finished_at_ms = Some(now_ms());
            },
        );
    }

    /// Records the query as failed.
    fn fail(&mut self, error: Error) {
        let error = QueryError::from(&error);
        let kept = error.clone();
        self.query.push(EventKind::Failed { error }, |r| {
            r.info.state = QueryState::Failed;
            r.info.error = Some(kept);
            r.info.finished_at_ms = Some(now_ms());
        });
    }
}
