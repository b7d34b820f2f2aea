//! A parser for server-sent events (the `text/event-stream` format that
//! OpenAI-compatible servers and the Anthropic API stream answers in).
//!
//! Bytes arrive in arbitrary chunks: an event, a line or a UTF-8 character
//! can be split across them. The parser keeps the unfinished tail and
//! yields an event at each blank line, as the WHATWG spec describes:
//! `data:` lines are joined with newlines, `event:` names the event, lines
//! starting with `:` are comments (keep-alives), CR LF and LF both end lines.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty when not given ("message").
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes after the last complete line.
    tail: Vec<u8>,
    /// The event being built.
    event: String,
    data: String,
    has_data: bool,
}

/// Longest line the parser accepts, so a server that never sends a newline
/// cannot grow memory without bound.
pub const MAX_LINE_BYTES: usize = 4 << 20;

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed. Errors when a line
    /// exceeds [`MAX_LINE_BYTES`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.tail.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.tail[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.tail[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.tail.drain(..start);
        if self.tail.len() > MAX_LINE_BYTES {
            return Err(format!(
                "server-sent event line longer than {MAX_LINE_BYTES} bytes"
            ));
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data {
                self.event.clear();
                return None;
            }
            self.has_data = false;
            return Some(SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let text = "event: a\r\ndata: {\"x\":\ndata: 1}\r\n\r\n: keep-alive\n\ndata: héllo\n\n";
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let mut p = SseParser::new();
            let mut got = p.push(&bytes[..split]).unwrap();
            got.extend(p.push(&bytes[split..]).unwrap());
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        event: "a".into(),
                        data: "{\"x\":\n1}".into()
                    },
                    SseEvent {
                        event: String::new(),
                        data: "héllo".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut p = SseParser::new();
        let chunk = vec![b'a'; MAX_LINE_BYTES + 1];
        assert!(p.push(&chunk).is_err());
    }
}
