//! The `local` provider: a GGUF chat model run in-process by candle, with
//! no network and no key (Gemma 3 270M by default, fetched by
//! `scripts/fetch-models`).
//!
//! One sequence decodes at a time (the model and its KV cache are one), so
//! calls wait in a **bounded queue**, served in order by one worker thread
//! per model, which first loads the model and then runs each call in a
//! thread pool of `[query] local_threads` threads. A call takes its place
//! before it starts ([`ModelProvider::admit`], at a query's Start or
//! Resume): when `[query] local_max_queued` calls already wait, the query
//! is refused at once (OVERLOADED) instead of timing out later. While it
//! waits, the call reports its place (`Queued`, then `Started` when the
//! model begins, from which its first-token timeout counts).
//!
//! Work stops when nobody wants it: a call whose stream was dropped
//! (Pause, SwitchModel, Terminate, a timeout, shutdown) is skipped when its
//! turn comes and gives its place back at once; the call running checks at
//! every token and stops at that boundary. No thread is held per waiting
//! call.
//!
//! Resume on the same model re-sends the transcript as the continuation;
//! its tokens are compared with the KV cache's and only what differs is
//! prefilled again ([`runner`]).

pub(crate) mod gemma3;
pub(crate) mod runner;
pub(crate) mod tokenizer;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

pub use gemma3::Gemma3;
pub use tokenizer::Tokenizer;
use tokio::sync::{mpsc, watch};

use self::runner::{Events, Runner};
use super::provider::{
    Admission, GenerationRequest, ModelProvider, ProviderError, ProviderEvent, ProviderStream,
    Slots,
};
use super::settings::ModelAliasSpec;
use crate::common::sync::lock;

/// Positions a local sequence may use when the alias gives no context
/// window: the KV cache grows with it (about 36 KB a position for Gemma 3
/// 270M).
pub const DEFAULT_CONTEXT: usize = 8192;

/// Where loading stands.
#[derive(Debug, Clone, PartialEq)]
enum Load {
    Loading,
    Ready,
    Failed(String),
}

/// A call waiting for the model.
#[derive(Debug)]
struct Job {
    request: GenerationRequest,
    events: Events,
    /// Its place in the queue, given back when the model starts on it.
    admission: Admission,
    /// The place last reported to the caller.
    reported: u64,
}

/// The calls waiting, in order, and whether the model is busy (loading,
/// or answering a call).
#[derive(Debug)]
struct Waiting {
    jobs: VecDeque<Job>,
    busy: bool,
    /// The provider is gone (its server was dropped): the worker ends and
    /// frees the model.
    closed: bool,
}

/// The calls waiting and the worker's wake-up.
#[derive(Debug)]
struct Queue {
    waiting: Mutex<Waiting>,
    arrived: Condvar,
}

impl Waiting {
    /// Drops the calls nobody waits for any more (their places come back)
    /// and tells the others where they stand. A call the idle model is
    /// about to take waits for nothing and is told nothing.
    fn tidy(&mut self) {
        self.jobs.retain(|job| !job.events.is_closed());
        let ahead = u64::from(self.busy);
        for (i, job) in self.jobs.iter_mut().enumerate() {
            let position = i as u64 + ahead;
            if position > 0 && job.reported != position {
                job.reported = position;
                // Best effort: a full channel means the caller is behind
                // and will get the next update.
                let _ = job.events.try_send(Ok(ProviderEvent::Queued(position)));
            }
        }
    }
}

/// A local GGUF model.
#[derive(Debug)]
pub struct LocalProvider {
    alias: String,
    state: watch::Receiver<Load>,
    queue: Arc<Queue>,
    slots: Arc<Slots>,
}

impl LocalProvider {
    /// Starts the model's worker: it loads `spec`'s model, then serves calls
    /// in order, at most `max_queued` waiting; `threads` (0: all cores) is
    /// the decode loop's thread count.
    pub fn start(spec: &ModelAliasSpec, threads: usize, max_queued: usize) -> Arc<Self> {
        let (tx, rx) = watch::channel(Load::Loading);
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("agentd-local-{i}"))
            .build()
            .unwrap_or_else(|e| panic!("cannot start the local model's threads: {e}"));
        let queue = Arc::new(Queue {
            waiting: Mutex::new(Waiting {
                jobs: VecDeque::new(),
                busy: true,
                closed: false,
            }),
            arrived: Condvar::new(),
        });
        let worker_queue = Arc::clone(&queue);
        let spec = spec.clone();
        let name = format!("agentd-local-{}", spec.alias);
        let alias = spec.alias.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(&spec, &pool, &worker_queue, &tx))
            .unwrap_or_else(|e| panic!("cannot start the local model's worker: {e}"));
        Arc::new(Self {
            alias,
            state: rx,
            queue,
            slots: Slots::new(max_queued),
        })
    }
}

impl Drop for LocalProvider {
    /// Ends the worker (once its load, if under way, is over): a server
    /// dropped inside a longer-lived process (an embedding application,
    /// the test suite) must not keep the model and its threads.
    fn drop(&mut self) {
        lock(&self.queue.waiting).closed = true;
        self.queue.arrived.notify_all();
    }
}

/// The worker: loads the model, then runs the queued calls one by one
/// until its provider is dropped.
fn serve(
    spec: &ModelAliasSpec,
    pool: &rayon::ThreadPool,
    queue: &Queue,
    state: &watch::Sender<Load>,
) {
    let started = std::time::Instant::now();
    let mut runner = match pool.install(|| Runner::load(spec)) {
        Ok(runner) => {
            tracing::info!(alias = %spec.alias, elapsed = ?started.elapsed(), "local model loaded");
            state.send_replace(Load::Ready);
            runner
        }
        Err(e) => {
            tracing::error!(alias = %spec.alias, error = %e, "local model failed to load");
            // Under the queue's lock, so no call is queued after the last
            // look: calls that waited for the load learn why it failed.
            let mut waiting = lock(&queue.waiting);
            state.send_replace(Load::Failed(e.clone()));
            for job in waiting.jobs.drain(..) {
                let _ = job.events.try_send(Err(load_failed(&e)));
            }
            return;
        }
    };
    loop {
        let job = {
            let mut waiting = lock(&queue.waiting);
            waiting.busy = false;
            loop {
                if waiting.closed {
                    return;
                }
                waiting.tidy();
                if let Some(job) = waiting.jobs.pop_front() {
                    waiting.busy = true;
                    waiting.tidy();
                    break job;
                }
                waiting = queue
                    .arrived
                    .wait(waiting)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        let Job {
            request,
            events,
            admission,
            ..
        } = job;
        // Running is not waiting: the place goes to the next caller.
        drop(admission);
        if events.blocking_send(Ok(ProviderEvent::Started)).is_err() {
            continue;
        }
        let result = pool.install(|| runner.generate(&request, &events));
        if let Err(e) = result {
            let _ = events.blocking_send(Err(ProviderError::fatal(format!("local model: {e}"))));
        }
    }
}

fn load_failed(e: &str) -> ProviderError {
    ProviderError::fatal(format!("the local model failed to load: {e}"))
}

impl ModelProvider for LocalProvider {
    fn admit(&self) -> Result<Admission, ProviderError> {
        if let Some(admission) = self.slots.take() {
            return Ok(admission);
        }
        // Places held by calls nobody waits for come back first.
        lock(&self.queue.waiting).tidy();
        self.slots.take().ok_or_else(|| {
            ProviderError::fatal(format!(
                "the queue of local model {:?} is full ({} calls waiting, [query] local_max_queued)",
                self.alias,
                self.slots.used()
            ))
        })
    }

    fn generate(&self, request: GenerationRequest, admission: Admission) -> ProviderStream {
        let (tx, mut rx) = mpsc::channel(64);
        let mut waiting = lock(&self.queue.waiting);
        if let Load::Failed(e) = &*self.state.borrow() {
            let _ = tx.try_send(Err(load_failed(e)));
        } else {
            waiting.jobs.push_back(Job {
                request,
                events: tx,
                admission,
                reported: 0,
            });
            waiting.tidy();
            self.queue.arrived.notify_one();
        }
        drop(waiting);
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    fn unavailable_reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            Load::Failed(e) => Some(format!("the local model failed to load: {e}")),
            _ => None,
        }
    }
}
