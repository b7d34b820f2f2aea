//! The `local` provider: a GGUF chat model run in-process by candle, with
//! no network and no key (Gemma 3 270M by default, fetched by
//! `scripts/fetch-models`).
//!
//! The model loads in a background thread at start-up; calls made while it
//! loads wait for it. One sequence decodes at a time (the model and its KV
//! cache are one), in a thread pool of `[query] local_threads` threads, on
//! the blocking pool so the async runtime never stalls. Each generated
//! token is checked against the receiving end of the stream: when the
//! engine drops the stream (Pause, SwitchModel, Terminate), the loop stops
//! at that token boundary.
//!
//! Resume on the same model re-sends the transcript as the continuation;
//! its tokens are compared with the KV cache's and only what differs is
//! prefilled again.

pub(crate) mod gemma3;
pub(crate) mod tokenizer;

pub use gemma3::Gemma3;
pub use tokenizer::Tokenizer;

use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokio::sync::{mpsc, watch};

use self::tokenizer::StreamDecoder;
use super::provider::{
    GenerationRequest, ModelProvider, ProviderError, ProviderEvent, ProviderStream,
};
use super::settings::ModelAliasSpec;
use super::types::{FinishReason, Role, TokenUsage};
use crate::common::sync::lock;

/// Positions a local sequence may use when the alias gives no context
/// window: the KV cache grows with it (about 36 KB a position for Gemma 3
/// 270M).
pub const DEFAULT_CONTEXT: usize = 8192;

/// Where loading stands.
#[derive(Debug, Clone)]
enum Load {
    Loading,
    Ready(Arc<Mutex<Runner>>),
    Failed(String),
}

/// A local GGUF model.
#[derive(Debug)]
pub struct LocalProvider {
    state: watch::Receiver<Load>,
    pool: Arc<rayon::ThreadPool>,
}

impl LocalProvider {
    /// Starts loading `spec`'s model in the background; `threads` (0: all
    /// cores) is the decode loop's thread count.
    pub fn start(spec: &ModelAliasSpec, threads: usize) -> Arc<Self> {
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
            .map(Arc::new)
            .unwrap_or_else(|e| panic!("cannot start the local model's threads: {e}"));
        let spec = spec.clone();
        let loader_pool = pool.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let state = match loader_pool.install(|| Runner::load(&spec)) {
                Ok(runner) => {
                    tracing::info!(alias = %spec.alias, elapsed = ?started.elapsed(), "local model loaded");
                    Load::Ready(Arc::new(Mutex::new(runner)))
                }
                Err(e) => {
                    tracing::error!(alias = %spec.alias, error = %e, "local model failed to load");
                    Load::Failed(e)
                }
            };
            let _ = tx.send(state);
        });
        Arc::new(Self { state: rx, pool })
    }
}

impl ModelProvider for LocalProvider {
    fn generate(&self, request: GenerationRequest) -> ProviderStream {
        let (tx, mut rx) = mpsc::channel(64);
        let mut state = self.state.clone();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let load = match state.wait_for(|s| !matches!(s, Load::Loading)).await {
                Ok(s) => s.clone(),
                Err(_) => Load::Failed("the loader stopped".into()),
            };
            let runner = match load {
                Load::Ready(runner) => runner,
                Load::Failed(e) => {
                    let _ = tx.send(Err(ProviderError::fatal(e))).await;
                    return;
                }
                Load::Loading => return,
            };
            let _ = tokio::task::spawn_blocking(move || {
                if tx.is_closed() {
                    return;
                }
                let result = pool.install(|| {
                    let mut runner = lock(&runner);
                    runner.generate(&request, &tx)
                });
                if let Err(e) = result {
                    let _ =
                        tx.blocking_send(Err(ProviderError::fatal(format!("local model: {e}"))));
                }
            })
            .await;
        });
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    fn unavailable_reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            Load::Failed(e) => Some(format!("the local model failed to load: {e}")),
            _ => None,
        }
    }
}

type Events = mpsc::Sender<Result<ProviderEvent, ProviderError>>;

/// The model, its tokenizer and what its KV cache holds.
#[derive(Debug)]
struct Runner {
    model: Gemma3,
    tokenizer: Tokenizer,
    start_of_turn: u32,
    end_of_turn: u32,
    /// Tokens whose keys and values are in the cache.
    cached: Vec<u32>,
}

impl Runner {
    fn load(spec: &ModelAliasSpec) -> Result<Runner, String> {
        let path = spec
            .path
            .as_ref()
            .ok_or_else(|| "no path to a GGUF file".to_owned())?;
        let mut file = std::fs::File::open(path).map_err(|e| {
            format!(
                "cannot open {}: {e} (run scripts/fetch-models)",
                path.display()
            )
        })?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| format!("{} is not a GGUF file: {e}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf(&content)?;
        let turn = |piece: &str| {
            tokenizer.id(piece).ok_or_else(|| {
                format!("the vocabulary has no {piece} token (not a Gemma chat model?)")
            })
        };
        let (start_of_turn, end_of_turn) = (turn("<start_of_turn>")?, turn("<end_of_turn>")?);
        let context = match spec.context_window as usize {
            0 => DEFAULT_CONTEXT,
            n => n,
        };
        let model = Gemma3::load(&content, &mut file, context).map_err(|e| e.to_string())?;
        Ok(Runner {
            model,
            tokenizer,
            start_of_turn,
            end_of_turn,
            cached: Vec::new(),
        })
    }

    /// Gemma's chat format, ending in the open model turn and the
    /// continuation. Gemma has no system role: system text opens the next
    /// user turn.
    fn prompt(&self, request: &GenerationRequest) -> Vec<u32> {
        let t = &self.tokenizer;
        let mut tokens = vec![t.bos];
        let mut system = request.system.clone();
        for m in &request.messages {
            let role = match m.role {
                Role::System => {
                    if !system.is_empty() {
                        system.push_str("\n\n");
                    }
                    system.push_str(&m.content);
                    continue;
                }
                Role::User => "user",
                Role::Assistant => "model",
            };
            let mut content = String::new();
            if role == "user" && !system.is_empty() {
                content.push_str(&std::mem::take(&mut system));
                content.push_str("\n\n");
            }
            content.push_str(&m.content);
            tokens.push(self.start_of_turn);
            tokens.extend(t.encode(&format!("{role}\n{content}")));
            tokens.push(self.end_of_turn);
            tokens.extend(t.encode("\n"));
        }
        tokens.push(self.start_of_turn);
        tokens.extend(t.encode("model\n"));
        tokens.extend(t.encode(&request.continuation));
        tokens
    }

    fn generate(&mut self, request: &GenerationRequest, tx: &Events) -> candle_core::Result<()> {
        let prompt = self.prompt(request);
        let limit = self.model.max_positions();
        if prompt.len() >= limit {
            let _ = tx.blocking_send(Err(ProviderError::fatal(format!(
                "the prompt is {} tokens; the local model's context holds {limit}",
                prompt.len()
            ))));
            return Ok(());
        }
        // Reuse the cache for the longest common prefix (at least one token
        // is fed, for its logits).
        let common = self
            .cached
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1)
            .min(self.model.cached());
        self.model.truncate(common)?;
        self.cached.truncate(common);
        let mut logits = self.model.forward(&prompt[common..])?;
        self.cached.extend_from_slice(&prompt[common..]);

        let p = &request.params;
        let sampling = match (p.temperature, p.top_p) {
            (None, _) => Sampling::ArgMax,
            (Some(t), _) if t <= 0.0 => Sampling::ArgMax,
            (Some(t), Some(top_p)) if top_p < 1.0 => Sampling::TopP {
                p: f64::from(top_p),
                temperature: f64::from(t),
            },
            (Some(t), _) => Sampling::All {
                temperature: f64::from(t),
            },
        };
        let seed = p.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let mut sampler = LogitsProcessor::from_sampling(seed, sampling);
        let mut stops = StopFilter::new(&p.stop);
        let mut decoder = StreamDecoder::default();
        let max_tokens = if p.max_tokens == 0 {
            u32::MAX
        } else {
            p.max_tokens
        } as u64;
        let mut produced = 0u64;
        let finish = loop {
            if tx.is_closed() {
                return Ok(()); // paused, switched or terminated: stop here
            }
            let next = sampler.sample(&logits)?;
            if next == self.tokenizer.eos || next == self.end_of_turn {
                break FinishReason::Stop;
            }
            produced += 1;
            let text = decoder.push(&self.tokenizer.token_bytes(next));
            let (emit, stopped) = stops.push(&text);
            if !emit.is_empty() && tx.blocking_send(Ok(ProviderEvent::Delta(emit))).is_err() {
                return Ok(());
            }
            if stopped {
                break FinishReason::StopSequence;
            }
            if produced >= max_tokens {
                break FinishReason::Length;
            }
            if self.model.cached() + 1 >= limit {
                break FinishReason::ContextWindow;
            }
            logits = self.model.forward(&[next])?;
            self.cached.push(next);
        };
        let rest = stops.flush();
        if !rest.is_empty() {
            let _ = tx.blocking_send(Ok(ProviderEvent::Delta(rest)));
        }
        let usage = TokenUsage {
            input: prompt.len() as u64,
            output: produced,
        };
        let _ = tx.blocking_send(Ok(ProviderEvent::Usage(usage)));
        let _ = tx.blocking_send(Ok(ProviderEvent::Finished(finish)));
        Ok(())
    }
}

/// Holds back text that may be the start of a stop sequence, and cuts the
/// output where one appears.
#[derive(Debug)]
struct StopFilter {
    stops: Vec<String>,
    held: String,
}

impl StopFilter {
    fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds text; returns what can be emitted and whether a stop sequence
    /// was found (the text from it on is dropped).
    fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let emit = self.held[..at].to_owned();
            self.held.clear();
            return (emit, true);
        }
        // The longest tail of `held` that begins some stop sequence stays.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let emit = self.held[..keep].to_owned();
        self.held.drain(..keep);
        (emit, false)
    }

    /// What is held at the end of the answer.
    fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_are_cut_even_when_split_across_tokens() {
        let mut f = StopFilter::new(&["END".into(), "\n\n".into()]);
        assert_eq!(f.push("hello E"), ("hello ".into(), false));
        assert_eq!(f.push("N"), (String::new(), false));
        assert_eq!(f.push("Xtra "), ("ENXtra ".into(), false));
        assert_eq!(f.push("done\n"), ("done".into(), false));
        assert_eq!(f.push("\nmore"), (String::new(), true));
        let mut none = StopFilter::new(&[]);
        assert_eq!(none.push("abc"), ("abc".into(), false));
    }
}
