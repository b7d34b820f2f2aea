//! The local model itself: prompt formatting, prefill that reuses the KV
//! cache, sampling, stop sequences, and a decode loop that stops at the
//! token boundary where its caller lets go.

use candle_core::quantized::gguf_file;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokio::sync::mpsc;

use super::DEFAULT_CONTEXT;
use super::gemma3::Gemma3;
use super::tokenizer::{StreamDecoder, Tokenizer};
use crate::query::provider::{GenerationRequest, ProviderError, ProviderEvent};
use crate::query::settings::ModelAliasSpec;
use crate::query::types::{FinishReason, Role, TokenUsage};

/// Where a call's events go.
pub type Events = mpsc::Sender<Result<ProviderEvent, ProviderError>>;

/// The model, its tokenizer and what its KV cache holds.
#[derive(Debug)]
pub struct Runner {
    model: Gemma3,
    tokenizer: Tokenizer,
    start_of_turn: u32,
    end_of_turn: u32,
    /// Tokens whose keys and values are in the cache.
    cached: Vec<u32>,
}

impl Runner {
    /// Loads `spec`'s GGUF file.
    pub fn load(spec: &ModelAliasSpec) -> Result<Runner, String> {
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
                // Queries with tools never reach the local model (it does
                // not support them); were one to, a result reads as user text.
                Role::User | Role::Tool => "user",
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

    /// Answers `request` on `tx`, stopping at the token boundary where the
    /// receiving end is dropped.
    pub fn generate(
        &mut self,
        request: &GenerationRequest,
        tx: &Events,
    ) -> candle_core::Result<()> {
        if tx.is_closed() {
            return Ok(()); // abandoned while it waited: not even a prefill
        }
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
