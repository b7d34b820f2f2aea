//! Re-reads the API keys file and the TLS files when they change (checked
//! every [`RELOAD_INTERVAL`]) and at once on SIGHUP, so keys are revoked and
//! certificates renewed without a restart or a dropped connection. A file
//! that fails to load is logged and the previous one stays in force.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use super::tls::Tls;
use crate::security::KeyRing;

/// How often the files are compared with what is in force.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the reloader; `None` when there is nothing to reload.
pub fn spawn(keys: Option<Arc<KeyRing>>, tls: Option<Arc<Tls>>) -> Option<JoinHandle<()>> {
    if keys.is_none() && tls.is_none() {
        return None;
    }
    // Installed now, before serving: a SIGHUP sent once the server answers
    // must not kill it (the default action).
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: files are reloaded on change only");
            None
        }
    };
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let signalled = tokio::select! {
                _ = tick.tick() => false,
                _ = hup => true,
            };
            if signalled {
                tracing::info!("SIGHUP: reloading the API keys and TLS files");
            }
            let (keys, tls) = (keys.clone(), tls.clone());
            // File reads are blocking, if small (a few KB).
            let _ =
                tokio::task::spawn_blocking(move || reload_once(keys.as_deref(), tls.as_deref()))
                    .await;
        }
    }))
}

fn reload_once(keys: Option<&KeyRing>, tls: Option<&Tls>) {
    {
        if let Some(keys) = keys {
            match keys.reload() {
                Ok(Some(count)) => tracing::info!(
                    file = %keys.path().display(), keys = count, "API keys reloaded"
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "API keys file not reloaded; the keys in force stay"
                ),
            }
        }
        if let Some(tls) = tls {
            match tls.reload() {
                Ok(true) => tracing::info!("TLS certificate reloaded; new connections use it"),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "TLS files not reloaded; the certificate in force stays"
                ),
            }
        }
    }
}
