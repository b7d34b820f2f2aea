//! A SentencePiece (BPE) tokenizer rebuilt from GGUF metadata, for models
//! that ship no tokenizer.json (Gemma 3's GGUF holds its vocabulary, piece
//! scores and piece types, but no merges).
//!
//! Encoding, as SentencePiece does it: user-defined pieces (runs of
//! whitespace, tabs, ...) are matched literally first; in the text between
//! them spaces become `▁`, then adjacent pieces are merged, always the pair
//! whose union is the vocabulary piece with the highest score, leftmost on
//! ties; a piece outside the vocabulary falls back to byte tokens
//! (`<0x41>`). Control tokens are never produced from text: chat templates
//! insert them by id, so a user cannot forge `<end_of_turn>`.
//!
//! Decoding is streaming ([`StreamDecoder`]): byte tokens can split a UTF-8
//! character, so bytes are held until they form whole characters.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use candle_core::quantized::gguf_file;

/// SentencePiece piece types as GGUF stores them.
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// The tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    /// Byte → its `<0xNN>` token.
    byte_tokens: [u32; 256],
    /// User-defined pieces by first character, longest first, for literal
    /// matching (an index, so a long text costs a lookup per character, not
    /// a scan of every piece).
    user_defined: HashMap<char, Vec<(String, u32)>>,
    /// Beginning and end of sequence.
    pub bos: u32,
    /// End of sequence.
    pub eos: u32,
}

impl Tokenizer {
    /// Reads the vocabulary from GGUF metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, String> {
        let get = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| format!("GGUF metadata {key} is missing"))
        };
        let model = get("tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| e.to_string())?;
        if model != "llama" {
            return Err(format!(
                "tokenizer model {model:?} is not SentencePiece (\"llama\")"
            ));
        }
        let list = |key: &str| get(key)?.to_vec().map_err(|e| e.to_string());
        let pieces: Vec<String> = list("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let scores: Vec<f32> = list("tokenizer.ggml.scores")?
            .iter()
            .map(|v| v.to_f32().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let types: Vec<i32> = list("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| v.to_i32().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        if scores.len() != pieces.len() || types.len() != pieces.len() {
            return Err("GGUF tokenizer lists differ in length".into());
        }
        let id =
            |key: &str| -> Result<u32, String> { get(key)?.to_u32().map_err(|e| e.to_string()) };
        let (bos, eos) = (
            id("tokenizer.ggml.bos_token_id")?,
            id("tokenizer.ggml.eos_token_id")?,
        );
        let mut ids = HashMap::with_capacity(pieces.len());
        let mut byte_tokens = [u32::MAX; 256];
        let mut user_defined: HashMap<char, Vec<(String, u32)>> = HashMap::new();
        for (i, piece) in pieces.iter().enumerate() {
            let i = i as u32;
            match types[i as usize] {
                BYTE => {
                    if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>'))
                        && let Ok(b) = u8::from_str_radix(hex, 16)
                    {
                        byte_tokens[b as usize] = i;
                    }
                }
                USER_DEFINED => {
                    if let Some(first) = piece.chars().next() {
                        user_defined
                            .entry(first)
                            .or_default()
                            .push((piece.clone(), i));
                    }
                }
                _ => {}
            }
            ids.entry(piece.clone()).or_insert(i);
        }
        if byte_tokens.contains(&u32::MAX) {
            return Err("the vocabulary lacks byte-fallback tokens".into());
        }
        for pieces in user_defined.values_mut() {
            pieces.sort_by_key(|(piece, _)| std::cmp::Reverse(piece.len()));
        }
        Ok(Tokenizer {
            pieces,
            scores,
            types,
            ids,
            byte_tokens,
            user_defined,
            bos,
            eos,
        })
    }

    /// The id of a piece (e.g. `<start_of_turn>`).
    pub fn id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// True for an empty vocabulary (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Token ids of `text` (no BOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        let mut plain_start = 0;
        let mut i = 0;
        // Split on user-defined pieces, longest match first.
        while i < rest.len() {
            let first = rest[i..].chars().next();
            let matched = first
                .and_then(|c| self.user_defined.get(&c))
                .and_then(|pieces| {
                    pieces
                        .iter()
                        .find(|(p, _)| rest[i..].starts_with(p.as_str()))
                });
            if let Some((piece, id)) = matched {
                self.encode_plain(&rest[plain_start..i], &mut out);
                out.push(*id);
                rest = &rest[i + piece.len()..];
                i = 0;
                plain_start = 0;
            } else {
                i += rest[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
        self.encode_plain(&rest[plain_start..], &mut out);
        out
    }

    /// BPE by piece score over text with no user-defined pieces.
    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let text = text.replace(' ', "▁");
        // Symbols as (start, len) byte ranges, in a doubly linked list.
        let mut start: Vec<usize> = Vec::new();
        let mut len: Vec<usize> = Vec::new();
        for (s, c) in text.char_indices() {
            start.push(s);
            len.push(c.len_utf8());
        }
        let n = start.len();
        let mut prev: Vec<isize> = (0..n as isize).map(|i| i - 1).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut heap = BinaryHeap::new();
        let push =
            |heap: &mut BinaryHeap<Pair>, l: usize, r: usize, start: &[usize], len: &[usize]| {
                let piece = &text[start[l]..start[r] + len[r]];
                if let Some(&id) = self.ids.get(piece)
                    && self.types[id as usize] != CONTROL
                {
                    heap.push(Pair {
                        score: self.scores[id as usize],
                        left: l,
                        size: piece.len(),
                    });
                }
            };
        for i in 0..n.saturating_sub(1) {
            push(&mut heap, i, i + 1, &start, &len);
        }
        while let Some(pair) = heap.pop() {
            let l = pair.left;
            let r = next[l];
            // Skip pairs made stale by an earlier merge.
            if len[l] == 0 || r >= n || len[l] + len[r] != pair.size {
                continue;
            }
            len[l] += len[r];
            len[r] = 0;
            next[l] = next[r];
            if next[l] < n {
                prev[next[l]] = l as isize;
            }
            if prev[l] >= 0 {
                push(&mut heap, prev[l] as usize, l, &start, &len);
            }
            if next[l] < n {
                push(&mut heap, l, next[l], &start, &len);
            }
        }
        let mut i = 0;
        while i < n {
            let piece = &text[start[i]..start[i] + len[i]];
            match self.ids.get(piece) {
                Some(&id) if self.types[id as usize] != CONTROL => out.push(id),
                _ => out.extend(piece.bytes().map(|b| self.byte_tokens[b as usize])),
            }
            i = next[i];
        }
    }

    /// The bytes a token stands for (nothing for control tokens).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(piece) = self.pieces.get(id as usize) else {
            return Vec::new();
        };
        match self.types[id as usize] {
            BYTE => self
                .byte_tokens
                .iter()
                .position(|&t| t == id)
                .map(|b| vec![b as u8])
                .unwrap_or_default(),
            CONTROL => Vec::new(),
            _ => piece.replace('▁', " ").into_bytes(),
        }
    }

    /// Text of `ids`, lossily decoded.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A merge candidate: higher score first, then leftmost.
#[derive(Debug, PartialEq)]
struct Pair {
    score: f32,
    left: usize,
    size: usize,
}

impl Eq for Pair {}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Turns generated tokens into text pieces that are whole UTF-8.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds a token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let s = s.to_owned();
                self.pending.clear();
                s
            }
            Err(e) if e.error_len().is_none() => {
                // An incomplete character at the end: keep it for later.
                let valid = e.valid_up_to();
                let s = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                self.pending.drain(..valid);
                s
            }
            Err(_) => {
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let mut d = StreamDecoder::default();
        let e = "é".as_bytes();
        assert_eq!(d.push(b"a"), "a");
        assert_eq!(d.push(&e[..1]), "");
        assert_eq!(d.push(&e[1..]), "é");
        assert_eq!(d.push(&[0xff]), "\u{fffd}");
    }
}
