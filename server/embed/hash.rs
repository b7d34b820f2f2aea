//! The hash embedder: feature hashing of words and character trigrams.
//!
//! It needs no weights, so `agentd serve` can embed before any model has been
//! fetched, and it is deterministic across machines and versions (FNV-1a, no
//! random seed). What it is good for: lexical similarity — texts sharing words
//! or word pieces (typos, inflections, code identifiers) score high; tests and
//! demos that need real, stable vectors. What it is not: semantic. "car" and
//! "automobile" share nothing here; use a BERT model for meaning.
//!
//! Each lower-cased word (a maximal run of alphanumeric characters) adds
//! weight 1 and each of its character trigrams (of `<word>`, so prefixes and
//! suffixes count) adds weight 0.5 to one of `dimensions` buckets, with a sign
//! taken from the hash so that collisions cancel out on average (signed
//! feature hashing).

use std::sync::Arc;

use super::model::{Embedder, Encoded, ModelInfo, ModelKind, Token};
use crate::error::Result;

/// Longest input in words; longer inputs are truncated like a model's tokens.
pub const MAX_WORDS: usize = 8192;
const WORD_WEIGHT: f32 = 1.0;
const TRIGRAM_WEIGHT: f32 = 0.5;

/// The hash embedder.
#[derive(Debug)]
pub struct HashEmbedder {
    info: ModelInfo,
}

impl HashEmbedder {
    /// An embedder named `id` producing `dimensions`-long vectors.
    pub fn new(id: impl Into<String>, dimensions: usize) -> Self {
        Self {
            info: ModelInfo {
                id: id.into(),
                kind: ModelKind::Hash,
                dimensions,
                max_input_tokens: MAX_WORDS,
                matryoshka_dimensions: Vec::new(),
            },
        }
    }

    fn vector(&self, words: &[(usize, usize)], text: &str) -> Vec<f32> {
        let dims = self.info.dimensions;
        let mut v = vec![0f32; dims];
        let mut add = |bytes: &[u8], weight: f32| {
            let h = fnv1a(bytes);
            let bucket = (h % dims as u64) as usize;
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[bucket] += sign * weight;
        };
        let mut padded = Vec::new();
        for &(start, end) in words {
            let word = text[start..end].to_lowercase();
            add(word.as_bytes(), WORD_WEIGHT);
            let chars: Vec<char> = std::iter::once('<')
                .chain(word.chars())
                .chain(std::iter::once('>'))
                .collect();
            for gram in chars.windows(3) {
                padded.clear();
                padded.extend(gram.iter().collect::<String>().into_bytes());
                // Trigrams hash in their own space: "abc" the trigram and
                // "abc" the word must not share a bucket by construction.
                padded.push(0xff);
                add(&padded, TRIGRAM_WEIGHT);
            }
        }
        v
    }
}

/// Byte ranges of the words of `text`.
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// 64-bit FNV-1a: tiny, fast on short keys and stable forever.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Embedder for HashEmbedder {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn encode(&self, text: &str) -> Result<Encoded> {
        let all = words(text);
        let kept = all.len().min(MAX_WORDS);
        let ids = all[..kept]
            .iter()
            .map(|&(s, e)| (fnv1a(text[s..e].to_lowercase().as_bytes()) >> 32) as u32)
            .collect();
        Ok(Encoded {
            ids,
            full_len: all.len(),
            text: Arc::from(text),
        })
    }

    fn embed(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>> {
        Ok(batch
            .iter()
            .map(|e| {
                let all = words(&e.text);
                self.vector(&all[..e.ids.len()], &e.text)
            })
            .collect())
    }

    fn tokens(&self, text: &str, _add_special_tokens: bool) -> Result<Vec<Token>> {
        Ok(words(text)
            .into_iter()
            .map(|(start, end)| {
                let word = text[start..end].to_lowercase();
                Token {
                    id: (fnv1a(word.as_bytes()) >> 32) as u32,
                    text: word,
                    special: false,
                    start,
                    end,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    fn embed(e: &HashEmbedder, text: &str) -> Vec<f32> {
        let enc = e.encode(text).unwrap();
        e.embed(&[&enc]).unwrap().remove(0)
    }

    #[test]
    fn deterministic_and_sized() {
        let e = HashEmbedder::new("hash", 384);
        let a = embed(&e, "The quick brown fox");
        assert_eq!(a.len(), 384);
        assert_eq!(a, embed(&e, "The quick brown fox"));
        // Pinned values: a change to the hashing scheme changes every stored
        // vector, so it must be deliberate.
        let nonzero = a.iter().filter(|x| **x != 0.0).count();
        assert!(nonzero > 10, "{nonzero}");
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn lexical_overlap_scores_higher_than_none() {
        let e = HashEmbedder::new("hash", 384);
        let base = embed(&e, "vector search with faiss indexes");
        let near = embed(&e, "searching vectors in a faiss index");
        let far = embed(&e, "the weather in Lisbon is mild");
        assert!(cosine(&base, &near) > 0.3, "{}", cosine(&base, &near));
        assert!(cosine(&base, &near) > cosine(&base, &far) + 0.2);
        assert_eq!(embed(&e, "Hello"), embed(&e, "hello"), "case-insensitive");
    }

    #[test]
    fn words_split_on_non_alphanumerics_and_keep_unicode() {
        let text = "naïve café, 東京 x_y";
        let w: Vec<&str> = words(text).into_iter().map(|(s, e)| &text[s..e]).collect();
        assert_eq!(w, ["naïve", "café", "東京", "x", "y"]);
    }

    #[test]
    fn long_inputs_are_truncated_and_flagged() {
        let e = HashEmbedder::new("hash", 16);
        let text = "w ".repeat(MAX_WORDS + 5);
        let enc = e.encode(&text).unwrap();
        assert_eq!(enc.ids.len(), MAX_WORDS);
        assert_eq!(enc.full_len, MAX_WORDS + 5);
    }
}
