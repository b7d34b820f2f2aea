//! grpc.health.v1 for the whole server and each agentd service by its full
//! name: SERVING when it can answer, NOT_SERVING while its model loads,
//! while its engine is not built yet, while the disk under the store is full
//! (MemoryService, whose writes fail then), and from the start of shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api;
use crate::common::blocking;
use crate::config::{ServiceKind, Services};
use crate::embed::ModelState;
use crate::pb::v1::{
    agent_service_server::AgentServiceServer, embedding_service_server::EmbeddingServiceServer,
    memory_service_server::MemoryServiceServer,
    query_control_service_server::QueryControlServiceServer,
};
use crate::store::SqliteStore;

/// Full gRPC name of each agentd service, as health and reflection report it.
pub fn service_name(kind: ServiceKind) -> &'static str {
    match kind {
        ServiceKind::Embedding => {
            <EmbeddingServiceServer<api::embedding::EmbeddingApi> as NamedService>::NAME
        }
        ServiceKind::Memory => MemoryServiceServer::<api::memory::MemoryApi>::NAME,
        ServiceKind::Query => QueryControlServiceServer::<api::query::QueryApi>::NAME,
        ServiceKind::Agents => AgentServiceServer::<api::agents::AgentApi>::NAME,
    }
}

/// Sets the health of every served service to `status`.
pub async fn set_services_health(
    health: &HealthReporter,
    services: Services,
    status: ServingStatus,
) {
    for kind in services.enabled_kinds() {
        health.set_service_status(service_name(kind), status).await;
    }
}

/// Keeps `service`'s health in step with an engine's model: SERVING once it is
/// ready, NOT_SERVING while it loads or after it failed. Sets the current
/// status before returning, then follows changes in the background until
/// shutdown starts.
pub async fn report_model_health(
    health: HealthReporter,
    service: &'static str,
    mut state: watch::Receiver<ModelState>,
    draining: watch::Receiver<bool>,
) {
    let status_of = |s: &ModelState| match s {
        ModelState::Ready => ServingStatus::Serving,
        ModelState::Loading | ModelState::Failed(_) => ServingStatus::NotServing,
    };
    let current = status_of(&state.borrow_and_update());
    health.set_service_status(service, current).await;
    let mut stop = draining.clone();
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|d| *d).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let status = status_of(&state.borrow_and_update());
                    let shutting_down = *draining.borrow();
                    if !shutting_down {
                        health.set_service_status(service, status).await;
                    }
                }
                () = &mut stopped => return,
            }
        }
    });
}

/// How often a full disk is probed for freed space.
const SPACE_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps MemoryService NOT_SERVING while the store's disk is full (its
/// writes answer STORAGE_FULL then; reads still work), SERVING again once
/// space is freed: noticed by the next write that succeeds, or by a probe
/// every few seconds while full, so a drained server finds its way back.
/// Stops when shutdown starts.
pub fn report_storage_health(
    health: HealthReporter,
    store: Arc<SqliteStore>,
    draining: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let service = service_name(ServiceKind::Memory);
    let mut full = store.full();
    tokio::spawn(async move {
        // MemoryService starts SERVING; only a change of the disk's state
        // changes it (tonic-health repeats even an unchanged status to its
        // watchers).
        let mut reported = false;
        loop {
            let is_full = *full.borrow_and_update();
            if is_full != reported && !*draining.borrow() {
                let status = if is_full {
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                };
                health.set_service_status(service, status).await;
                reported = is_full;
            }
            if is_full {
                tokio::select! {
                    changed = full.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(SPACE_PROBE_INTERVAL) => {
                        let store = Arc::clone(&store);
                        let _ = blocking::run("space probe", move || Ok(store.has_space())).await;
                    }
                }
            } else if full.changed().await.is_err() {
                return;
            }
        }
    })
}
