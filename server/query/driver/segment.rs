//! One stretch of generation: a provider stream, read delta by delta
//! until a command, a rule, the end of the model's turn or a failure stops
//! it, with token accounting and the routing rules checked as it goes.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::{Instant, sleep_until};

use super::{Driver, Mode, Outcome};
use crate::error::Error;
use crate::metrics::catalog;
use crate::query::events::EventKind;
use crate::query::models::ModelEntry;
use crate::query::provider::{GenerationRequest, ProviderError, ProviderEvent, estimate_tokens};
use crate::query::types::{FinishReason, GenerationParams, RuleTrigger, SwitchReason, TokenUsage};

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

impl Driver {
    /// Generates until a command, a rule, the end of the answer or a
    /// failure stops this provider stream.
    pub(super) async fn segment(&mut self, delay: Duration) -> Outcome {
        let deadline = Instant::now() + self.budget_left;
        let entry = match self.shared.registry.get(&self.model) {
            Ok(entry) => entry.clone(),
            Err(e) => return Outcome::Failed(ProviderError::fatal(e.to_string())),
        };
        if let Some(reason) = self.shared.registry.unavailable_reason(&self.model) {
            return Outcome::Failed(ProviderError::fatal(format!("unavailable: {reason}")));
        }
        if self.needs_tools() && !entry.spec.supports_tools() {
            return Outcome::Failed(ProviderError::fatal(format!(
                "model {:?} cannot call tools",
                self.model
            )));
        }
        let wake = Instant::now() + delay;
        while Instant::now() < wake {
            tokio::select! {
                biased;
                cmd = self.control.recv() => {
                    if let Some(cmd) = cmd
                        && let Some(outcome) = self.on_command(cmd, Mode::Streaming)
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
            params: GenerationParams {
                max_tokens: u32::try_from(remaining).unwrap_or(u32::MAX),
                ..self.start.params.clone()
            },
            tools: self.tools.descriptions.clone(),
            tool_choice: self.tool_choice.clone(),
        };
        let prompt_bytes: usize = request.system.len()
            + request.continuation.len()
            + request
                .messages
                .iter()
                .map(|m| {
                    m.content.len()
                        + m.tool_calls
                            .iter()
                            .map(|c| c.name.len() + c.arguments_text().len())
                            .sum::<usize>()
                })
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
        // The turn's tool calls: recorded together when the stream ends
        // whole, dropped with it otherwise (the model makes them again).
        let mut calls = Vec::new();
        loop {
            let waiting_first = segment.deltas == 0;
            let first_token_deadline = self.first_token_deadline(started, running_since);
            tokio::select! {
                biased;
                cmd = self.control.recv() => {
                    let Some(cmd) = cmd else { continue };
                    self.account(&mut segment);
                    if let Some(outcome) = self.on_command(cmd, Mode::Streaming) {
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
                        if segment.deltas == 0 {
                            let first = started.elapsed();
                            metrics::histogram!(catalog::QUERY_FIRST_TOKEN, "model" => self.model.clone())
                                .record(first.as_secs_f64());
                            tracing::Span::current()
                                .record("first_token_ms", first.as_secs_f64() * 1e3);
                        }
                        self.delta(text);
                        segment.deltas += 1;
                        if let Some(max) = self.start.max_cost_usd {
                            let spent = self.cost + segment.entry.cost(segment.pending());
                            if spent > max {
                                self.account(&mut segment);
                                self.fail(Error::BudgetExceeded(format!(
                                    "the query's cost {spent:.6} USD passed its limit of {max} USD"
                                )));
                                return Outcome::Stopped;
                            }
                        }
                        if let Some(i) = self.due_rule(&segment, None) {
                            self.account(&mut segment);
                            self.fire(i);
                            return Outcome::Continue;
                        }
                    }
                    Some(Ok(ProviderEvent::ToolCall(call))) => calls.push(call),
                    Some(Ok(ProviderEvent::Usage(usage))) => segment.reported = Some(usage),
                    Some(Ok(ProviderEvent::Finished(reason))) => finish = Some(reason),
                    Some(Err(e)) => {
                        self.account(&mut segment);
                        return Outcome::Failed(e);
                    }
                    None => {
                        self.account(&mut segment);
                        return match finish {
                            Some(_) if !calls.is_empty() => {
                                self.turn_ended(std::mem::take(&mut calls))
                            }
                            Some(reason) => {
                                self.turns += 1;
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
        for (kind, tokens) in [("input", pending.input), ("output", pending.output)] {
            if tokens > 0 {
                metrics::counter!(catalog::QUERY_TOKENS, "model" => self.model.clone(), "kind" => kind)
                    .increment(tokens);
            }
        }
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
}
