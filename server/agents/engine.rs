//! The agents engine: its handle, what it shares, and how records and
//! events go between the engine's types and the store's rows.

use std::sync::Arc;

use tokio::sync::watch;

use super::types::{Activity, ActivityKind, Agent, AgentBody, AgentState, Spec, SpecBody};
use crate::error::{Error, Result};
use crate::query::QueryEngine;
use crate::store::{AgentStore, NewEvent, StoredAgent, StoredEvent, StoredSpec};

/// The agents engine (cheap to clone).
#[derive(Debug, Clone)]
pub struct AgentEngine {
    pub(super) store: Arc<dyn AgentStore>,
    /// The query engine, whose model aliases specs name; None when the
    /// query service is off.
    pub(super) query: Option<QueryEngine>,
    /// The id of the last event appended, for watchers to wake on.
    pub(super) last_event: Arc<watch::Sender<u64>>,
}

impl AgentEngine {
    /// An engine on `store`, checking model aliases against `query`.
    pub fn new(store: Arc<dyn AgentStore>, query: Option<QueryEngine>) -> Result<Self> {
        let last = store.last_event_id()?;
        Ok(Self {
            store,
            query,
            last_event: Arc::new(watch::channel(last).0),
        })
    }

    /// Whether `alias` is a model of the query engine (None: no engine).
    pub(super) fn is_model(&self, alias: &str) -> Option<bool> {
        let query = self.query.as_ref()?;
        Some(query.models().iter().any(|m| m.spec.alias == alias))
    }

    /// Tells watchers about events just appended.
    pub(super) fn appended(&self, events: &[StoredEvent]) {
        if let Some(last) = events.iter().map(|e| e.id).max() {
            self.last_event.send_if_modified(|current| {
                let newer = last > *current;
                if newer {
                    *current = last;
                }
                newer
            });
        }
    }
}

/// An event to append.
pub(super) fn new_event(kind: ActivityKind, message: String) -> NewEvent {
    NewEvent {
        time: crate::common::clock::now_ms(),
        kind: kind.as_str().to_owned(),
        message,
        details: "{}".to_owned(),
        ..Default::default()
    }
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("stored {what} is unreadable: {e}"))
}

/// A spec from its stored version.
pub(super) fn spec_of(s: StoredSpec) -> Result<Spec> {
    let body: SpecBody = serde_json::from_str(&s.body).map_err(|e| unreadable("spec", e))?;
    Ok(Spec {
        name: s.name,
        body,
        version: s.version,
        updated_at_ms: s.updated_at,
    })
}

/// An agent from its row.
pub(super) fn agent_of(a: StoredAgent) -> Result<Agent> {
    let body: AgentBody = serde_json::from_str(&a.body).map_err(|e| unreadable("agent", e))?;
    let state = AgentState::parse(&a.state).ok_or_else(|| unreadable("agent state", &a.state))?;
    Ok(Agent {
        id: a.id,
        spec_name: a.spec_name,
        spec_version: a.spec_version,
        swarm_id: a.swarm_id,
        state,
        created_at_ms: a.created_at,
        body,
    })
}

/// The row of an agent.
pub(super) fn row_of(a: &Agent) -> StoredAgent {
    StoredAgent {
        id: a.id.clone(),
        spec_name: a.spec_name.clone(),
        spec_version: a.spec_version,
        swarm_id: a.swarm_id.clone(),
        state: a.state.as_str().to_owned(),
        created_at: a.created_at_ms,
        body: serde_json::to_string(&a.body).unwrap_or_default(),
    }
}

/// An event from its row.
pub(super) fn activity_of(e: StoredEvent) -> Result<Activity> {
    let StoredEvent { id, event } = e;
    let kind =
        ActivityKind::parse(&event.kind).ok_or_else(|| unreadable("event kind", &event.kind))?;
    let details = match serde_json::from_str(&event.details) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(unreadable("event details", &event.details)),
    };
    Ok(Activity {
        id,
        kind,
        time_ms: event.time,
        agent_id: event.agent_id,
        swarm_id: event.swarm_id,
        task_id: event.task_id,
        spec_name: event.spec_name,
        message: event.message,
        details,
    })
}
