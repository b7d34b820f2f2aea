//! Blocking work off the async reactor.
//!
//! Store calls wait on disk (and on fsync for writes), faiss and candle
//! calls on the CPU: a tokio worker that ran them would stall every other
//! task on it. Engines run them here, on tokio's blocking pool, and get
//! their result back as the engine's `Result`.

use std::sync::Arc;

use crate::error::{Error, Result};

/// Runs `f` on the blocking pool. A panic inside it becomes
/// `Error::Internal` naming `what`, instead of unwinding into the caller.
pub async fn run<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("{what} failed: {e}")))?
}

/// Runs `f` with `store` on the blocking pool: the one way engines call
/// their store trait.
pub async fn with_store<S, T>(
    store: &Arc<S>,
    f: impl FnOnce(&S) -> Result<T> + Send + 'static,
) -> Result<T>
where
    S: ?Sized + Send + Sync + 'static,
    T: Send + 'static,
{
    let store = Arc::clone(store);
    run("store call", move || f(&store)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_and_panics_come_back_as_results() {
        assert_eq!(run("adding", || Ok(1 + 1)).await.unwrap(), 2);
        let err = run("a buggy call", || -> Result<()> { panic!("boom") })
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Internal(ref m) if m.contains("a buggy call")),
            "{err}"
        );
    }
}
