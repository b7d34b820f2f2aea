//! The tool loop: a model turn that ends with tool calls records them,
//! runs the server tools, waits for the others' results, and when every
//! call has one, starts the next turn with the whole history.
//!
//! Calls are recorded only when the turn's stream ended whole, so a call is
//! in the log once or not at all; a result is taken once per call. That is
//! what makes pause, switch, fallback and restart safe: nothing already
//! answered runs again, and the history sent to the next model holds every
//! call with its result.

use tokio::time::Instant;

use super::{Driver, Outcome};
use crate::error::Error;
use crate::query::events::EventKind;
use crate::query::tools::turn::Refused;
use crate::query::tools::{
    ToolCall, ToolCallRecord, ToolChoice, ToolLocation, ToolOutcome, ToolTurn, WorkerToolCall,
};
use crate::query::types::{FinishReason, QueryState};

/// Turns in a row whose every call was invalid before the query fails:
/// the model gets one turn to correct its arguments.
const MAX_INVALID_TURNS: u32 = 2;

impl Driver {
    /// The model's turn ended with `calls`. Records them, answers at once
    /// the ones that cannot run, starts the server tools, and leaves the
    /// query awaiting the rest (or going on to the next turn, or ending).
    pub(super) fn turn_ended(&mut self, calls: Vec<ToolCall>) -> Outcome {
        self.turns += 1;
        let turn = self.turns;
        let seq = self.seq;
        // Later turns may call tools or not: a REQUIRED or NAMED choice
        // applies to the first, so that the loop can end.
        self.tool_choice = ToolChoice::Auto;
        let last_turn = turn >= self.max_turns;
        // Ids already used in this query, and then in this turn.
        let mut taken: std::collections::HashSet<String> = self
            .query
            .info()
            .tool_calls
            .into_iter()
            .map(|r| r.call.id)
            .collect();
        let mut placed: Vec<(ToolCall, ToolLocation)> = Vec::with_capacity(calls.len());
        for mut call in calls {
            // The provider's id, unless it is empty or already used (some
            // servers number calls per turn, or give none).
            if call.id.is_empty() || taken.contains(&call.id) {
                call.id = format!("call_{}", ulid::Ulid::new());
            }
            taken.insert(call.id.clone());
            let location = self.tools.location(&call.name);
            placed.push((call, location));
        }
        let timeouts = self.tools.clone();
        let default_timeout = self.shared.settings.tool_timeout;
        let text = self.text[self.turn_start..].to_owned();
        self.awaiting = Some(ToolTurn::new(text, placed.clone(), |c| {
            timeouts.timeout(&c.name).unwrap_or(default_timeout)
        }));
        for (call, location) in &placed {
            let record = ToolCallRecord {
                call: call.clone(),
                location: *location,
                turn,
                outcome: None,
            };
            self.query.push(
                EventKind::ToolCall {
                    call: call.clone(),
                    location: *location,
                    seq,
                    turn,
                },
                |r| {
                    r.info.state = QueryState::AwaitingTools;
                    r.info.turns = turn;
                    r.info.tool_calls.push(record);
                },
            );
        }
        let mut invalid = 0;
        for (call, location) in &placed {
            let problem = if last_turn {
                Some(format!(
                    "not run: the query reached its limit of {} model turns (max_turns)",
                    self.max_turns
                ))
            } else {
                self.tools.problem(call)
            };
            if let Some(problem) = problem {
                invalid += 1;
                self.resolve(&call.id, ToolOutcome::error(problem));
            } else if *location == ToolLocation::Server {
                self.run_server_tool(call);
            } else if *location == ToolLocation::Worker {
                self.lease_worker_tool(call);
            }
        }
        if last_turn {
            self.complete(FinishReason::MaxTurns);
            return Outcome::Stopped;
        }
        if invalid == placed.len() {
            self.invalid_turns += 1;
            if self.invalid_turns >= MAX_INVALID_TURNS {
                self.fail(Error::Provider(format!(
                    "{} made only invalid tool calls in {MAX_INVALID_TURNS} turns in a row",
                    self.model
                )));
                return Outcome::Stopped;
            }
        } else {
            self.invalid_turns = 0;
        }
        match self.query.state() {
            QueryState::Running => Outcome::Continue,
            _ => Outcome::Stopped,
        }
    }

    /// Runs a server tool in its own task; its result comes back through
    /// the driver's result channel.
    fn run_server_tool(&mut self, call: &ToolCall) {
        let arguments = call.object().cloned().unwrap_or_default();
        let run = self.shared.server_tools.run(&call.name, arguments);
        let results = self.tool_results_tx.clone();
        let id = call.id.clone();
        let task = tokio::spawn(async move {
            let outcome = run.await;
            let _ = results.send((id, outcome)).await;
        });
        if let Some(turn) = &mut self.awaiting {
            turn.running(&call.id, task.abort_handle());
        }
    }

    /// Hands a worker tool's call to the Agent engine and waits for its
    /// result in a task of its own, which the driver aborts when the call
    /// is answered otherwise (its time is up, the query ended): the Agent
    /// engine then withdraws the lease.
    fn lease_worker_tool(&mut self, call: &ToolCall) {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let info = self.query.info();
        let request = WorkerToolCall {
            query_id: info.id.clone(),
            labels: info.labels.clone(),
            call: call.clone(),
            capability: self.tools.capability(&call.name).unwrap_or_default(),
            timeout: self
                .tools
                .timeout(&call.name)
                .unwrap_or(self.shared.settings.tool_timeout),
            reply,
        };
        let results = self.tool_results_tx.clone();
        let id = call.id.clone();
        let sent = self.shared.worker_tools.send(request);
        let task = tokio::spawn(async move {
            let outcome = match sent {
                Ok(()) => outcome.await.unwrap_or_else(|_| {
                    ToolOutcome::error("the Agent engine dropped the call without a result")
                }),
                Err(refused) => refused,
            };
            let _ = results.send((id, outcome)).await;
        });
        if let Some(turn) = &mut self.awaiting {
            turn.running(&call.id, task.abort_handle());
        }
    }

    /// A result for call `id` from `from` (a client), checked: answers the
    /// calls of the turn still waiting.
    pub(super) fn submit(
        &mut self,
        id: &str,
        outcome: ToolOutcome,
        from: ToolLocation,
    ) -> Result<u32, Error> {
        let checked = match &self.awaiting {
            Some(turn) => turn.check(id, Some(from)),
            None => Err(Refused::Unknown),
        };
        match checked {
            Ok(()) => {}
            Err(Refused::Unknown) => {
                let answered = self
                    .query
                    .info()
                    .tool_calls
                    .iter()
                    .any(|r| r.call.id == id && r.outcome.is_some());
                return Err(if answered {
                    Error::WrongState(format!("tool call {id} already has its result"))
                } else {
                    Error::NotFound {
                        kind: "tool call",
                        name: id.to_owned(),
                    }
                });
            }
            Err(Refused::Answered) => {
                return Err(Error::WrongState(format!(
                    "tool call {id} already has its result"
                )));
            }
            Err(Refused::NotYours(ToolLocation::Worker)) => {
                return Err(Error::WrongState(format!(
                    "tool call {id} is of a worker tool: the worker it is leased to gives its \
                     result"
                )));
            }
            Err(Refused::NotYours(_)) => {
                return Err(Error::WrongState(format!(
                    "tool call {id} is of a server tool: agentd runs it and gives its result"
                )));
            }
        }
        self.resolve(id, outcome);
        Ok(self.awaiting.as_ref().map_or(0, |t| t.pending() as u32))
    }

    /// Records the result of call `id` (already checked). When it was the
    /// last, the turn becomes history and, unless the query is paused, the
    /// next model turn starts.
    pub(super) fn resolve(&mut self, id: &str, outcome: ToolOutcome) {
        let Some(turn) = &mut self.awaiting else {
            return;
        };
        let Some(name) = turn.resolve(id, outcome.clone()) else {
            return;
        };
        let last = turn.pending() == 0;
        let kept = outcome.clone();
        self.query.push(
            EventKind::ToolResult {
                call_id: id.to_owned(),
                name,
                outcome,
            },
            |r| {
                if let Some(record) = r.info.tool_calls.iter_mut().find(|c| c.call.id == id) {
                    record.outcome = Some(kept);
                }
                if last && r.info.state == QueryState::AwaitingTools {
                    r.info.state = QueryState::Running;
                }
            },
        );
        if last && let Some(turn) = self.awaiting.take() {
            self.conversation.extend(turn.into_messages());
            self.turn_start = self.text.len();
        }
    }

    /// Answers with an error the calls whose time to wait is over.
    pub(super) fn expire_tool_calls(&mut self) {
        let Some(turn) = &self.awaiting else {
            return;
        };
        let expired: Vec<(String, std::time::Duration)> = turn
            .expired(Instant::now())
            .into_iter()
            .map(|id| {
                let timeout = turn
                    .call(&id)
                    .and_then(|c| self.tools.timeout(&c.name))
                    .unwrap_or(self.shared.settings.tool_timeout);
                (id, timeout)
            })
            .collect();
        for (id, timeout) in expired {
            self.resolve(
                &id,
                ToolOutcome::error(format!(
                    "no result within {} s; the tool was not waited for any longer",
                    timeout.as_secs()
                )),
            );
            if self.awaiting.is_none() {
                break;
            }
        }
    }
}
