//! The threads searches run on: one per core, taking searches in arrival
//! order.
//!
//! A search is CPU-bound: on tokio's blocking pool, sixteen concurrent
//! searches were sixteen threads sharing two cores, each search taking
//! about eight times its own cost from start to end. That hurt twice.
//! Searches took turns by time slice rather than one after another, and a
//! writer (the index merger linking a point, a write copying points into
//! the fresh segment) that waits for the collection's write lock waited
//! for every search in flight to end, while Rust's read/write lock held
//! every new search back behind it: sixteen clients beside a 1,000
//! points/s writer had a server queue p99 of 13–17 ms (BENCHMARKS.md).
//! Here at most one search per core is in flight; the rest wait in line
//! without holding the lock, and a writer waits for at most one search
//! per core.
//!
//! A search predicted to take long (an exact scan of a large fresh
//! segment, a very high efSearch) would hold its thread and everyone in
//! line behind it, so it goes to tokio's blocking pool instead, where
//! short searches can still pass it ([`IndexSearch`](super::search_job)
//! decides).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use crate::common::sync::lock;
use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking jobs from one queue, first in first out.
#[derive(Debug)]
pub struct SearchPool {
    jobs: mpsc::Sender<Job>,
}

impl SearchPool {
    /// The process's pool: searches of every collection share the cores.
    /// Started on first use, one thread per core.
    pub fn shared() -> &'static SearchPool {
        static POOL: OnceLock<SearchPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            SearchPool::start(cores)
        })
    }

    /// A pool of `threads` threads (at least one). A thread that cannot
    /// be started is logged; the others serve.
    pub fn start(threads: usize) -> Self {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let inbox = Arc::new(Mutex::new(inbox));
        for i in 0..threads.max(1) {
            let inbox = Arc::clone(&inbox);
            let started = std::thread::Builder::new()
                .name(format!("search-{i}"))
                .spawn(move || {
                    loop {
                        // The guard ends with the statement: one thread
                        // waits for the next job, the others for it.
                        let job = lock(&inbox).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "could not start a search thread");
            }
        }
        Self { jobs }
    }

    /// Runs `f` on the pool once the searches queued before it have
    /// started, and returns its result. A panic inside `f` becomes
    /// `Error::Internal`, and the thread goes on.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            // The caller may have gone (a cancelled request).
            let _ = answer.send(outcome);
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal("the search threads are gone".into()))?;
        match answered.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Internal("a search failed unexpectedly".into())),
            Err(_) => Err(Error::Internal("no search thread is running".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_jobs_run_at_once_than_threads_and_all_answer() {
        let pool = Arc::new(SearchPool::start(2));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs = (0..12).map(|i| {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(i * 2)
                })
                .await
            })
        });
        let answers: Vec<usize> = futures::future::join_all(jobs)
            .await
            .into_iter()
            .map(|a| a.unwrap().unwrap())
            .collect();
        assert_eq!(answers, (0..12).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 2, "two threads, two at a time");
    }

    #[tokio::test]
    async fn a_panic_is_an_internal_error_and_the_pool_goes_on() {
        let pool = SearchPool::start(1);
        let err = pool
            .run(|| -> Result<()> { panic!("boom") })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
        assert_eq!(pool.run(|| Ok(5)).await.unwrap(), 5);
    }
}
