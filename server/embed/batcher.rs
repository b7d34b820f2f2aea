//! Dynamic batching: concurrent requests for one model share forward passes.
//!
//! One task per model owns the queue (an actor, as in text-embeddings-
//! inference). It takes the oldest waiting request, adds whatever else is
//! already waiting while the batch stays within `max_batch_tokens` and
//! `max_batch_requests`, and runs one forward pass for all of them on the
//! blocking pool. Requests that arrive during a pass wait for the next one,
//! so batches grow with load and a lone request is never delayed on purpose.
//!
//! Inside a pass, inputs are sorted by length and run in groups of similar
//! length, each padded only to its own longest input: padding a short text to
//! the length of a long one costs as much compute as the long one.
//!
//! The queue itself is unbounded because admission is bounded before it: the
//! engine holds a semaphore permit for every request in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::catalog;

use tokio::sync::{mpsc, oneshot};

use super::model::{Embedder, Encoded};
use crate::error::{Error, Result};

/// How big a batch may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most tokens (sum over inputs) in one batch; a single request larger
    /// than this runs alone.
    pub max_batch_tokens: usize,
    /// Most requests gathered into one batch.
    pub max_batch_requests: usize,
    /// Most inputs in one padded group of a forward pass.
    pub max_group_inputs: usize,
}

/// Default batch limits.
pub const DEFAULT_BATCH_LIMITS: BatchLimits = BatchLimits {
    max_batch_tokens: 16_384,
    max_batch_requests: 64,
    max_group_inputs: 32,
};

/// The vectors of one request and where its time went.
#[derive(Debug)]
pub struct Batched {
    /// One pooled vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// From submission to the start of its forward pass.
    pub queue: Duration,
    /// The forward pass it was part of.
    pub compute: Duration,
    /// How many requests shared that pass.
    pub batch_requests: usize,
}

struct Job {
    inputs: Vec<Encoded>,
    tokens: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Batched>>,
}

/// The handle requests use to reach a model's batching task.
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Batcher {
    /// Starts the batching task for `embedder`. It ends when every handle is
    /// dropped.
    pub fn start(embedder: Arc<dyn Embedder>, limits: BatchLimits) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(queue, embedder, limits));
        Self { jobs }
    }

    /// Embeds `inputs`, sharing a forward pass with whatever else is waiting.
    pub async fn embed(&self, inputs: Vec<Encoded>) -> Result<Batched> {
        let (reply, answer) = oneshot::channel();
        let tokens = inputs.iter().map(|e| e.ids.len()).sum();
        self.jobs
            .send(Job {
                inputs,
                tokens,
                enqueued: Instant::now(),
                reply,
            })
            .map_err(|_| Error::Internal("the embedding batcher has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the embedding batcher dropped a request".into()))?
    }
}

async fn run(
    mut queue: mpsc::UnboundedReceiver<Job>,
    embedder: Arc<dyn Embedder>,
    limits: BatchLimits,
) {
    let mut carried: Option<Job> = None;
    // Kept, not looked up per batch (the recorder is in place before any
    // engine starts; without one they record nothing).
    let model = [("model", embedder.info().id.clone())];
    let compute_seconds = metrics::histogram!(catalog::EMBEDDING_COMPUTE, &model);
    let queue_seconds = metrics::histogram!(catalog::EMBEDDING_QUEUE, &model);
    let batch_inputs = metrics::histogram!(catalog::EMBEDDING_BATCH_INPUTS, &model);
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut tokens = first.tokens;
        let mut jobs = vec![first];
        while jobs.len() < limits.max_batch_requests {
            match queue.try_recv() {
                Ok(job) if tokens + job.tokens > limits.max_batch_tokens => {
                    carried = Some(job);
                    break;
                }
                Ok(job) => {
                    tokens += job.tokens;
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // A caller that gave up (deadline, disconnect) needs no compute.
        jobs.retain(|job| !job.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }

        let started = Instant::now();
        let mut inputs = Vec::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.inputs.len(), job.enqueued, job.reply));
            inputs.extend(job.inputs);
        }
        let model = Arc::clone(&embedder);
        let max_group = limits.max_group_inputs;
        let result =
            tokio::task::spawn_blocking(move || forward_grouped(&*model, &inputs, max_group))
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("forward pass panicked: {e}"))));
        let compute = started.elapsed();
        let batch_requests = replies.len();
        compute_seconds.record(compute.as_secs_f64());
        let inputs: usize = replies.iter().map(|(count, ..)| count).sum();
        batch_inputs.record(inputs as f64);
        for (_, enqueued, _) in &replies {
            queue_seconds.record(started.duration_since(*enqueued).as_secs_f64());
        }
        match result {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter();
                for (count, enqueued, reply) in replies {
                    let _ = reply.send(Ok(Batched {
                        vectors: vectors.by_ref().take(count).collect(),
                        queue: started.duration_since(enqueued),
                        compute,
                        batch_requests,
                    }));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for (_, _, reply) in replies {
                    let _ = reply.send(Err(Error::Internal(message.clone())));
                }
            }
        }
    }
}

/// Runs `inputs` through `model` in groups of similar length and returns the
/// vectors in the original order.
fn forward_grouped(
    model: &dyn Embedder,
    inputs: &[Encoded],
    max_group: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| inputs[i].ids.len());
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
    for group in order.chunks(max_group.max(1)) {
        let refs: Vec<&Encoded> = group.iter().map(|&i| &inputs[i]).collect();
        for (&i, v) in group.iter().zip(model.embed(&refs)?) {
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::embed::model::{ModelInfo, ModelKind, Token};

    /// Records the size of every forward pass and returns each input's
    /// length as its vector, so order mistakes show.
    #[derive(Debug)]
    struct Recorder {
        info: ModelInfo,
        passes: Mutex<Vec<usize>>,
    }

    impl Embedder for Recorder {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn encode(&self, text: &str) -> Result<Encoded> {
            Ok(Encoded {
                ids: vec![0; text.len()],
                full_len: text.len(),
                text: Arc::from(text),
            })
        }
        fn embed(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
            std::thread::sleep(Duration::from_millis(20));
            self.passes.lock().unwrap().push(batch.len());
            Ok(batch.iter().map(|e| vec![e.ids.len() as f32]).collect())
        }
        fn tokens(&self, _: &str, _: bool) -> Result<Vec<Token>> {
            Ok(Vec::new())
        }
    }

    fn recorder() -> Arc<Recorder> {
        Arc::new(Recorder {
            info: ModelInfo {
                id: "rec".into(),
                kind: ModelKind::Hash,
                dimensions: 1,
                max_input_tokens: 1000,
                matryoshka_dimensions: vec![],
            },
            passes: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_passes_and_get_their_own_vectors() {
        let model = recorder();
        let batcher = Batcher::start(model.clone(), DEFAULT_BATCH_LIMITS);
        let tasks: Vec<_> = (1..=40)
            .map(|n| {
                let batcher = batcher.clone();
                let model = model.clone();
                tokio::spawn(async move {
                    let input = model.encode(&"x".repeat(n)).unwrap();
                    (n, batcher.embed(vec![input]).await.unwrap())
                })
            })
            .collect();
        let mut shared = 0;
        for task in tasks {
            let (n, out) = task.await.unwrap();
            assert_eq!(
                out.vectors,
                vec![vec![n as f32]],
                "request {n} got someone else's vector"
            );
            shared = shared.max(out.batch_requests);
        }
        let passes = model.passes.lock().unwrap().len();
        assert!(passes < 40, "40 requests took {passes} passes: no batching");
        assert!(shared > 1);
    }

    #[tokio::test]
    async fn a_batch_respects_the_token_budget() {
        let model = recorder();
        let limits = BatchLimits {
            max_batch_tokens: 10,
            max_batch_requests: 64,
            max_group_inputs: 64,
        };
        let batcher = Batcher::start(model.clone(), limits);
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let batcher = batcher.clone();
                let input = model.encode("xxxx").unwrap();
                tokio::spawn(async move { batcher.embed(vec![input]).await.unwrap() })
            })
            .collect();
        for task in tasks {
            let out = task.await.unwrap();
            assert!(
                out.batch_requests <= 2,
                "4-token inputs, budget 10: {}",
                out.batch_requests
            );
        }
    }

    #[test]
    fn grouping_by_length_keeps_the_original_order() {
        let model = recorder();
        let inputs: Vec<Encoded> = [5, 1, 9, 3, 7]
            .iter()
            .map(|n| model.encode(&"y".repeat(*n)).unwrap())
            .collect();
        let out = forward_grouped(&*model, &inputs, 2).unwrap();
        assert_eq!(
            out,
            vec![vec![5.0], vec![1.0], vec![9.0], vec![3.0], vec![7.0]]
        );
        assert_eq!(*model.passes.lock().unwrap(), vec![2, 2, 1]);
    }
}
