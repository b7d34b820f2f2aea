//! Re-reads the API keys file and the TLS files when they change (checked
//! every [`RELOAD_INTERVAL`]) and at once on SIGHUP, so keys are revoked and
//! certificates renewed without a restart or a dropped connection. A file
//! that fails to load is logged (once per distinct error, not every second)
//! and the previous one stays in force.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use super::tls::Tls;
use crate::security::KeyRing;

/// How often the files are compared with what is in force.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// What one round found, per file set.
struct Round {
    keys: Option<anyhow::Result<Option<usize>>>,
    tls: Option<anyhow::Result<bool>>,
}

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
        let (mut keys_error, mut tls_error) = (None, None);
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
                (keys_error, tls_error) = (None, None);
            }
            let (k, t) = (keys.clone(), tls.clone());
            // File reads are blocking, if small (a few KB).
            let Ok(round) = tokio::task::spawn_blocking(move || Round {
                keys: k.map(|k| k.reload()),
                tls: t.map(|t| t.reload()),
            })
            .await
            else {
                continue;
            };
            report(round, keys.as_deref(), &mut keys_error, &mut tls_error);
        }
    }))
}

fn report(
    round: Round,
    keys: Option<&KeyRing>,
    keys_error: &mut Option<String>,
    tls_error: &mut Option<String>,
) {
    match round.keys {
        Some(Ok(Some(count))) => {
            *keys_error = None;
            let file = keys
                .map(|k| k.path().display().to_string())
                .unwrap_or_default();
            tracing::info!(file, keys = count, "API keys reloaded");
        }
        Some(Err(e)) => {
            let e = format!("{e:#}");
            if keys_error.as_ref() != Some(&e) {
                tracing::error!(error = %e, "API keys file not reloaded; the keys in force stay");
                *keys_error = Some(e);
            }
        }
        Some(Ok(None)) | None => {}
    }
    match round.tls {
        Some(Ok(true)) => {
            *tls_error = None;
            tracing::info!("TLS certificate reloaded; new connections use it");
        }
        Some(Err(e)) => {
            let e = format!("{e:#}");
            if tls_error.as_ref() != Some(&e) {
                tracing::error!(error = %e, "TLS files not reloaded; the certificate in force stays");
                *tls_error = Some(e);
            }
        }
        Some(Ok(false)) | None => {}
    }
}
