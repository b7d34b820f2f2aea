//! Commands from clients (Pause, Resume, SwitchModel, Inject, Terminate,
//! tool results), handled by the driver between deltas, in whatever state
//! the query is in.

use super::{Driver, Mode, Outcome};
use crate::common::clock::now_ms;
use crate::error::Error;
use crate::query::engine::Switched;
use crate::query::events::EventKind;
use crate::query::session::Control;
use crate::query::tools::ToolLocation;
use crate::query::types::{ChatMessage, QueryState, Role, SwitchReason};

impl Driver {
    /// Handles a command in `mode`. Returns how the current provider
    /// stream must end (`Streaming` only), or `None` when the command was
    /// refused or needs no stream.
    pub(super) fn on_command(&mut self, cmd: Control, mode: Mode) -> Option<Outcome> {
        let id = self.query.id();
        let seq = self.seq;
        let streaming = mode == Mode::Streaming;
        match cmd {
            Control::Pause(reply) => {
                if mode == Mode::Paused {
                    let _ = reply.send(Err(Error::WrongState(format!(
                        "query {id} is already paused"
                    ))));
                    return None;
                }
                self.query.push(EventKind::Paused { seq }, |r| {
                    r.info.state = QueryState::Paused;
                });
                let _ = reply.send(Ok(seq));
                streaming.then_some(Outcome::Stopped)
            }
            Control::Resume { model, reply } => {
                if mode != Mode::Paused {
                    let _ = reply.send(Err(Error::WrongState(format!(
                        "query {id} is {}; only a paused query can be resumed",
                        self.query.state().as_str()
                    ))));
                    return None;
                }
                let target = model.clone().unwrap_or_else(|| self.model.clone());
                // A query whose tool calls still wait calls no model yet.
                let awaiting = self.awaiting.as_ref().is_some_and(|t| t.pending() > 0);
                let checked = if awaiting {
                    self.check_model(&target)
                } else {
                    self.take_place(&target)
                };
                if let Err(e) = checked {
                    let _ = reply.send(Err(e));
                    return None;
                }
                if let Some(model) = model.filter(|m| *m != self.model) {
                    self.switch_to(model, SwitchReason::Requested);
                }
                self.resume(awaiting);
                let _ = reply.send(Ok(self.model.clone()));
                None
            }
            Control::SwitchModel { model, reply } => {
                if model == self.model {
                    let _ = reply.send(Err(Error::invalid(
                        "model",
                        format!("query {id} already runs on {model:?}"),
                    )));
                    return None;
                }
                // Streaming: the new model is called at once, so it must
                // have room; otherwise Resume or the next turn will ask.
                let checked = if streaming {
                    self.take_place(&model)
                } else {
                    self.check_model(&model)
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
                streaming.then_some(Outcome::Continue)
            }
            Control::Inject { message, reply } => {
                if self.awaiting.is_some() {
                    let _ = reply.send(Err(Error::WrongState(format!(
                        "query {id} awaits the results of its tool calls; a message can be \
                         injected once they are in"
                    ))));
                    return None;
                }
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
                if mode == Mode::Paused {
                    self.resume(false);
                }
                let _ = reply.send(Ok(seq));
                streaming.then_some(Outcome::Continue)
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
                // Server tools still running for it stop.
                self.awaiting = None;
                let _ = reply.send(Ok(seq));
                streaming.then_some(Outcome::Stopped)
            }
            Control::ToolResult {
                call_id,
                outcome,
                reply,
            } => {
                let _ = reply.send(self.submit(&call_id, outcome, ToolLocation::Client));
                None
            }
        }
    }

    /// Takes a place in `model`'s queue for the next call (a command that
    /// makes the query generate on it): NotFound for an unknown alias,
    /// FailedPrecondition for a model that cannot serve this query,
    /// Overloaded when its queue is full; then the command is refused and
    /// nothing changes.
    pub(super) fn take_place(&mut self, model: &str) -> Result<(), Error> {
        self.check_model(model)?;
        let entry = self.shared.registry.get(model)?;
        let admission = entry
            .provider
            .admit()
            .map_err(|e| Error::Overloaded(e.message))?;
        self.admission = Some((model.to_owned(), admission));
        Ok(())
    }

    /// Whether `model` exists and can serve this query (tools need a
    /// model that supports them).
    pub(super) fn check_model(&self, model: &str) -> Result<(), Error> {
        let entry = self.shared.registry.get(model)?;
        if self.needs_tools() && !entry.spec.supports_tools() {
            return Err(Error::WrongState(format!(
                "model {model:?} cannot call tools, and query {} uses them",
                self.query.id()
            )));
        }
        Ok(())
    }

    /// Records that a paused query goes on: awaiting its tool results
    /// when some are still missing, else generating.
    pub(super) fn resume(&mut self, awaiting: bool) {
        let (seq, model) = (self.seq, self.model.clone());
        let state = if awaiting {
            QueryState::AwaitingTools
        } else {
            QueryState::Running
        };
        self.query.push(EventKind::Resumed { seq, model }, |r| {
            r.info.state = state;
        });
    }
}
