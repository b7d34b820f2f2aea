//! One query as everybody else sees it: its record, its event log, and the
//! way to send it commands.
//!
//! Only the query's driver (see [`super::driver`]) appends events, one at a
//! time under the record's lock, so the log's order is the order things
//! happened in. Readers (Session and Attach streams, GetQuery) copy from
//! the log at their own pace and are woken through a `watch` channel when
//! it grows: a slow reader holds no buffer of its own and slows nobody.

use std::sync::{Arc, Mutex};

use futures::Stream;
use futures::stream;
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::Switched;
use super::events::{Event, EventKind, QueryInfo};
use super::tools::ToolOutcome;
use super::types::{ChatMessage, QueryState};
use crate::common::clock::now_ms;
use crate::common::sync::lock;
use crate::error::{Error, Result};

/// The answer to a command, sent back by the driver.
pub type Reply<T> = oneshot::Sender<Result<T>>;

/// A command for a query's driver.
#[derive(Debug)]
pub enum Control {
    /// Stop at the next token boundary; answers the last seq.
    Pause(Reply<u64>),
    /// Continue, optionally on another model; answers the model.
    Resume {
        /// New alias, if any.
        model: Option<String>,
        /// Answer.
        reply: Reply<String>,
    },
    /// Change model; answers the previous model and the seq.
    SwitchModel {
        /// New alias.
        model: String,
        /// Answer.
        reply: Reply<Switched>,
    },
    /// Add a message and continue; answers the seq before it.
    Inject {
        /// The message.
        message: ChatMessage,
        /// Answer.
        reply: Reply<u64>,
    },
    /// End the query; answers the last seq.
    Terminate {
        /// Why.
        reason: String,
        /// Answer.
        reply: Reply<u64>,
    },
    /// The result of a client tool call; answers the calls of the turn
    /// still waiting.
    ToolResult {
        /// The call.
        call_id: String,
        /// What the tool gave.
        outcome: ToolOutcome,
        /// Answer.
        reply: Reply<u32>,
    },
}

/// What is recorded of a query.
#[derive(Debug)]
pub struct Record {
    /// The summary.
    pub info: QueryInfo,
    /// The log.
    pub events: Vec<Event>,
    /// The answer so far (the concatenation of the deltas).
    pub text: String,
    /// Log position (0-based) of delta `seq` at `[seq - 1]`.
    delta_positions: Vec<usize>,
}

/// A query: its record and a way to reach its driver.
#[derive(Debug)]
pub struct Query {
    record: Mutex<Record>,
    /// Number of events in the log, to wake readers.
    grown: watch::Sender<usize>,
    /// The same, changed only by events other than deltas: wakes readers
    /// of the outline (an agent's task) once per turn, not once per token.
    outlined: watch::Sender<usize>,
    /// To the driver; `None` for a query read back from the store.
    control: Option<mpsc::Sender<Control>>,
}

impl Query {
    /// A new query and the receiving end of its commands.
    pub fn new(info: QueryInfo) -> (Arc<Query>, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(16);
        let query = Query {
            record: Mutex::new(Record {
                info,
                events: Vec::new(),
                text: String::new(),
                delta_positions: Vec::new(),
            }),
            grown: watch::channel(0).0,
            outlined: watch::channel(0).0,
            control: Some(tx),
        };
        (Arc::new(query), rx)
    }

    /// A finished query read back from the store: readable, not
    /// controllable.
    pub fn restored(info: QueryInfo, events: Vec<Event>) -> Arc<Query> {
        let mut text = String::new();
        let mut delta_positions = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let EventKind::Delta { text: t, .. } = &e.kind {
                text.push_str(t);
                delta_positions.push(i);
            }
        }
        let len = events.len();
        Arc::new(Query {
            record: Mutex::new(Record {
                info,
                events,
                text,
                delta_positions,
            }),
            grown: watch::channel(len).0,
            outlined: watch::channel(len).0,
            control: None,
        })
    }

    /// The query's id.
    pub fn id(&self) -> String {
        lock(&self.record).info.id.clone()
    }

    /// A copy of the summary.
    pub fn info(&self) -> QueryInfo {
        lock(&self.record).info.clone()
    }

    /// The summary and the answer so far.
    pub fn info_and_text(&self) -> (QueryInfo, String) {
        let r = lock(&self.record);
        (r.info.clone(), r.text.clone())
    }

    /// The state now.
    pub fn state(&self) -> QueryState {
        lock(&self.record).info.state
    }

    /// What `read` makes of the whole log, read in place (a finished
    /// query's log is hundreds of deltas: persisting or caching it needs
    /// no copy).
    pub fn with_events<T>(&self, read: impl FnOnce(&[Event]) -> T) -> T {
        read(&lock(&self.record).events)
    }

    /// Appends an event, after letting `update` change the record in the
    /// same critical section (so GetQuery never sees an event without its
    /// effect). Keeps text, delta count and the model span of deltas.
    pub fn push(&self, kind: EventKind, update: impl FnOnce(&mut Record)) -> u64 {
        let mut r = lock(&self.record);
        let now = now_ms();
        if let EventKind::Delta { seq, text, .. } = &kind {
            r.text.push_str(text);
            r.info.delta_count = *seq;
            r.info.first_token_at_ms.get_or_insert(now);
            if let Some(span) = r.info.model_history.last_mut() {
                span.to_seq = *seq;
            }
            let position = r.events.len();
            r.delta_positions.push(position);
        }
        update(&mut r);
        let index = r.events.len() as u64 + 1;
        let delta = matches!(kind, EventKind::Delta { .. });
        r.events.push(Event {
            index,
            time_ms: now,
            kind,
        });
        let len = r.events.len();
        drop(r);
        self.grown.send_replace(len);
        if !delta {
            self.outlined.send_replace(len);
        }
        index
    }

    /// Appends an event from outside the driver (a refused command) unless
    /// the query has ended: nothing follows a final event.
    pub fn push_unless_finished(&self, kind: EventKind) -> bool {
        let mut r = lock(&self.record);
        if r.events.last().is_some_and(|e| e.kind.is_final()) {
            return false;
        }
        let index = r.events.len() as u64 + 1;
        r.events.push(Event {
            index,
            time_ms: now_ms(),
            kind,
        });
        let len = r.events.len();
        drop(r);
        self.grown.send_replace(len);
        self.outlined.send_replace(len);
        true
    }

    /// Sends `make(reply)` to the driver and waits for its answer.
    /// WRONG_STATE once the query has finished.
    pub async fn command<T>(&self, make: impl FnOnce(Reply<T>) -> Control) -> Result<T> {
        let finished = || {
            let info = self.info();
            Error::WrongState(format!("query {} is {}", info.id, info.state.as_str()))
        };
        let Some(control) = &self.control else {
            return Err(finished());
        };
        let (tx, rx) = oneshot::channel();
        control.send(make(tx)).await.map_err(|_| finished())?;
        rx.await.map_err(|_| finished())?
    }

    /// Where a reader that wants deltas from `from_seq` on starts in the
    /// log: after delta `from_seq - 1` (so the non-delta events between
    /// come too), or at the start for `from_seq` ≤ 1.
    pub fn position_of_seq(&self, from_seq: u64) -> Result<usize> {
        let r = lock(&self.record);
        let count = r.delta_positions.len() as u64;
        match from_seq {
            0 | 1 => Ok(0),
            s if s <= count + 1 => Ok(r.delta_positions[(s - 2) as usize] + 1),
            s => Err(Error::invalid(
                "from_seq",
                format!(
                    "must be at most the next seq, {} (the query has {count} deltas), got {s}",
                    count + 1
                ),
            )),
        }
    }

    /// The log from position `from` (0-based) on, then every later event as
    /// it is recorded; ends after the query's final event.
    pub fn follow(self: Arc<Self>, from: usize) -> impl Stream<Item = Event> + Send + 'static {
        let rx = self.grown.subscribe();
        self.follow_where(from, |_| true, rx)
    }

    /// [`Query::follow`] without the deltas (not even copied), woken only
    /// when something else is recorded: what a follower that needs only
    /// the turns' outcomes reads.
    pub fn follow_outline(self: Arc<Self>) -> impl Stream<Item = Event> + Send + 'static {
        let rx = self.outlined.subscribe();
        self.follow_where(0, |kind| !matches!(kind, EventKind::Delta { .. }), rx)
    }

    /// The log from `from` on with only the events whose kind `keep`
    /// accepts, woken by `rx`.
    fn follow_where(
        self: Arc<Self>,
        from: usize,
        keep: fn(&EventKind) -> bool,
        rx: watch::Receiver<usize>,
    ) -> impl Stream<Item = Event> + Send + 'static {
        let state = (self, rx, from, std::collections::VecDeque::new());
        stream::unfold(
            state,
            move |(query, mut rx, mut next, mut buffer)| async move {
                loop {
                    if let Some(event) = buffer.pop_front() {
                        return Some((event, (query, rx, next, buffer)));
                    }
                    rx.borrow_and_update();
                    {
                        let r = lock(&query.record);
                        if next < r.events.len() {
                            // A bounded copy per wake-up keeps the lock short.
                            let end = r.events.len().min(next + 256);
                            buffer.extend(
                                r.events[next..end]
                                    .iter()
                                    .filter(|e| keep(&e.kind))
                                    .cloned(),
                            );
                            next = end;
                            continue;
                        }
                        if r.events.last().is_some_and(|e| e.kind.is_final()) {
                            return None;
                        }
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }
}
