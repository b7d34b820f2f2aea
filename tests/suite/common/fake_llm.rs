//! A fake LLM provider on 127.0.0.1 that speaks the real wire formats:
//! OpenAI chat completions and Anthropic Messages, both streamed as
//! server-sent events over HTTP/1.1. agentd's real provider clients run
//! against it.
//!
//! Every answer is a prefix of one known text ([`ANSWER`]): given the
//! continuation in the request (the last assistant message), the fake
//! streams the rest of the text a word at a time. So whatever a session
//! does (pause, switch, fallback), its final text must equal the known text
//! exactly — any lost or repeated word shows.
//!
//! The model id picks a behaviour, applied to every request for it:
//! - `echo`: answer normally (a short delay per word);
//! - `slow`: 40 ms per word;
//! - `mute`: accept the request, send nothing;
//! - `overload@N`: after N words, a mid-stream error event;
//! - `drop@N`: after N words, close the connection;
//! - `status@C`: answer HTTP status C with an error body.
//!
//! Tool calls: when the request offers tools and its first user message
//! holds a script, the fake plays it. A script is blocks separated by lines
//! `---`; block k (k = the assistant turns with tool calls already in the
//! request's history) is the model's turn k + 1: an optional `say <text>`
//! line, streamed as text, then `call <name> <arguments>` lines, streamed
//! as tool calls in the provider's real format (OpenAI `tool_calls`
//! deltas, Anthropic `tool_use` blocks with `input_json_delta`), arguments
//! in fragments of 7 bytes, sent as written (so invalid JSON can be
//! scripted). Once the blocks are used up, the fake answers with the known
//! text. Call ids are `call_<turn>_<i>` (OpenAI) and `toolu_<turn>_<i>`,
//! or the id a line `call@<id> <name> <arguments>` gives (`call@ ...`: none).
//!
//! Plain replies (agent tests): a line `reply <text>` in the last user
//! message makes the fake answer `<text>` instead of the known text, and
//! `reply@<model id> <text>` only when the request is for that model id
//! (any model id not listed above behaves like `echo`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The text every model "knows": 300 numbered words.
pub fn answer() -> String {
    (1..=300).map(|i| format!("w{i} ")).collect()
}

/// The known answer, computed once.
pub static ANSWER: std::sync::LazyLock<String> = std::sync::LazyLock::new(answer);

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `/chat/completions` or `/v1/messages`.
    pub path: String,
    /// The model id.
    pub model: String,
    /// The request's headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
    /// When its body had arrived.
    pub at: std::time::Instant,
}

/// A running fake.
#[derive(Debug, Clone)]
pub struct FakeLlm {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Delay between words for `echo`.
    pub word_delay: Duration,
}

impl FakeLlm {
    /// Starts a fake whose `echo` words come `word_delay` apart.
    pub async fn start(word_delay: Duration) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeLlm {
            addr: listener.local_addr().unwrap(),
            received: Arc::new(Mutex::new(Vec::new())),
            word_delay,
        };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = server.serve(socket).await;
                });
            }
        });
        fake
    }

    /// Base URL for an `openai` alias.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an `anthropic` alias.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn serve(&self, mut socket: TcpStream) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let header_end = loop {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < header_end + length {
            let mut chunk = [0u8; 65536];
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Value =
            serde_json::from_slice(&buf[header_end..header_end + length]).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or("").to_owned();
        self.received.lock().unwrap().push(Received {
            path: path.clone(),
            model: model.clone(),
            headers,
            body: body.clone(),
            at: std::time::Instant::now(),
        });
        let anthropic = path.ends_with("/v1/messages");

        if let Some(code) = model.strip_prefix("status@") {
            let message = if anthropic {
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            } else {
                json!({"error": {"type": "server_error", "message": "upstream exploded"}})
            };
            let text = message.to_string();
            let response = format!(
                "HTTP/1.1 {code} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            socket.write_all(response.as_bytes()).await?;
            return socket.shutdown().await;
        }

        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
            .await?;
        if model == "mute" {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        let (fail_after, drop_after) = match model.split_once('@') {
            Some(("overload", n)) => (n.parse().ok(), None),
            Some(("drop", n)) => (None, n.parse::<usize>().ok()),
            _ => (None, None),
        };
        let delay = if model == "slow" {
            Duration::from_millis(40)
        } else {
            self.word_delay
        };

        // The continuation: the last assistant message, if the request ends
        // with one. Anthropic prefill has lost its trailing whitespace.
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let prefix = messages
            .last()
            .filter(|m| m["role"] == "assistant")
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned();
        let turn = script_turn(&body, &messages);
        let reply = scripted_reply(&model, &messages);
        let text: &str = match (&turn, &reply) {
            (Some(turn), _) => &turn.say,
            (None, Some(reply)) => reply,
            (None, None) => &ANSWER,
        };
        let rest = text.strip_prefix(prefix.as_str()).unwrap_or(text);
        let mut words: Vec<String> = Vec::new();
        let mut current = String::new();
        for c in rest.chars() {
            current.push(c);
            // A leading space (after a trimmed prefill) rides with the
            // next word, as a real model's token would.
            if c == ' ' && !current.trim().is_empty() {
                words.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            words.push(current);
        }
        let max_tokens = body["max_tokens"].as_u64().unwrap_or(u64::MAX) as usize;
        let length_cut = words.len() > max_tokens;
        words.truncate(max_tokens);

        let send = |event: Option<&str>, data: Value| {
            let mut s = String::new();
            if let Some(e) = event {
                s.push_str(&format!("event: {e}\n"));
            }
            s.push_str(&format!("data: {data}\n\n"));
            s
        };
        if anthropic {
            socket
                .write_all(send(Some("message_start"), json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": model, "usage": {"input_tokens": 10, "output_tokens": 1}}})).as_bytes())
                .await?;
            socket
                .write_all(send(Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})).as_bytes())
                .await?;
            socket
                .write_all(b": ping\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n")
                .await?;
        }
        for (i, word) in words.iter().enumerate() {
            if Some(i) == fail_after {
                let error = if anthropic {
                    send(
                        Some("error"),
                        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                    )
                } else {
                    send(
                        None,
                        json!({"error": {"type": "server_error", "message": "The server had an error while processing your request"}}),
                    )
                };
                socket.write_all(error.as_bytes()).await?;
                return socket.shutdown().await;
            }
            if Some(i) == drop_after {
                return Ok(()); // dropping the socket cuts the stream
            }
            tokio::time::sleep(delay).await;
            let event = if anthropic {
                send(
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}),
                )
            } else {
                send(
                    None,
                    json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]}),
                )
            };
            socket.write_all(event.as_bytes()).await?;
        }
        let output = words.len();
        if let Some(turn) = turn.filter(|_| !length_cut) {
            let k = turn.number;
            for (i, (name, arguments, scripted_id)) in turn.calls.iter().enumerate() {
                let fragments: Vec<String> = arguments
                    .as_bytes()
                    .chunks(7)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                if anthropic {
                    let index = i + 1;
                    let id = scripted_id.clone().unwrap_or(format!("toolu_{k}_{i}"));
                    socket
                        .write_all(send(Some("content_block_start"), json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})).as_bytes())
                        .await?;
                    for f in fragments {
                        tokio::time::sleep(delay).await;
                        socket
                            .write_all(send(Some("content_block_delta"), json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": f}})).as_bytes())
                            .await?;
                    }
                    socket
                        .write_all(
                            send(
                                Some("content_block_stop"),
                                json!({"type": "content_block_stop", "index": index}),
                            )
                            .as_bytes(),
                        )
                        .await?;
                } else {
                    let id = scripted_id.clone().unwrap_or(format!("call_{k}_{i}"));
                    let chunk = |delta: Value| {
                        send(
                            None,
                            json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": null}]}),
                        )
                    };
                    socket
                        .write_all(chunk(json!({"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}})).as_bytes())
                        .await?;
                    for f in fragments {
                        tokio::time::sleep(delay).await;
                        socket
                            .write_all(
                                chunk(json!({"index": i, "function": {"arguments": f}})).as_bytes(),
                            )
                            .await?;
                    }
                }
            }
            let end = if anthropic {
                send(
                    Some("message_delta"),
                    json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": output + turn.calls.len()}}),
                ) + &send(Some("message_stop"), json!({"type": "message_stop"}))
            } else {
                send(
                    None,
                    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
                ) + &send(
                    None,
                    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": output + turn.calls.len(), "total_tokens": 10 + output}}),
                ) + "data: [DONE]\n\n"
            };
            socket.write_all(end.as_bytes()).await?;
            return socket.shutdown().await;
        }
        if anthropic {
            let reason = if length_cut { "max_tokens" } else { "end_turn" };
            let end = send(
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ) + &send(
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": output}}),
            ) + &send(Some("message_stop"), json!({"type": "message_stop"}));
            socket.write_all(end.as_bytes()).await?;
        } else {
            let reason = if length_cut { "length" } else { "stop" };
            let end = send(
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}),
            ) + &send(
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": output, "total_tokens": 10 + output}}),
            ) + "data: [DONE]\n\n";
            socket.write_all(end.as_bytes()).await?;
        }
        socket.shutdown().await
    }
}

/// One scripted model turn with tool calls.
#[derive(Debug, Clone)]
struct ScriptTurn {
    /// The turn's number, from 1.
    number: usize,
    /// Text before the calls.
    say: String,
    /// (tool name, arguments as written, id if scripted).
    calls: Vec<(String, String, Option<String>)>,
}

/// The answer the last user message asks of `model`: its first line
/// `reply@<model> <text>` for this model, or `reply <text>` for any (`\n`
/// in the text is a line break).
fn scripted_reply(model: &str, messages: &[Value]) -> Option<String> {
    let last_user = messages.iter().rev().find(|m| m["role"] == "user")?;
    let content = match &last_user["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    let mine = format!("reply@{model} ");
    content.lines().find_map(|line| {
        let text = line
            .strip_prefix(&mine)
            .or_else(|| line.strip_prefix("reply "))?;
        Some(text.replace("\\n", "\n"))
    })
}

/// The scripted turn this request asks for, if the request offers tools,
/// its first user message holds a script and the script has a block left.
fn script_turn(body: &Value, messages: &[Value]) -> Option<ScriptTurn> {
    if body["tools"].as_array().is_none_or(|t| t.is_empty()) {
        return None;
    }
    let first_user = messages.iter().find(|m| m["role"] == "user")?;
    let script = match &first_user["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    // Turns already taken: assistant messages with tool calls (OpenAI) or
    // tool_use blocks (Anthropic).
    let done = messages
        .iter()
        .filter(|m| {
            m["role"] == "assistant"
                && (m["tool_calls"].as_array().is_some_and(|c| !c.is_empty())
                    || m["content"]
                        .as_array()
                        .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_use")))
        })
        .count();
    let block = script.split("\n---\n").nth(done)?;
    let mut turn = ScriptTurn {
        number: done + 1,
        say: String::new(),
        calls: Vec::new(),
    };
    for line in block.lines() {
        if let Some(text) = line.strip_prefix("say ") {
            turn.say = format!("{text} ");
        } else if let Some(call) = line.strip_prefix("call ") {
            let (name, arguments) = call.split_once(' ').unwrap_or((call, ""));
            turn.calls
                .push((name.to_owned(), arguments.to_owned(), None));
        } else if let Some(call) = line.strip_prefix("call@") {
            let (id, call) = call.split_once(' ').unwrap_or((call, ""));
            let (name, arguments) = call.split_once(' ').unwrap_or((call, ""));
            turn.calls
                .push((name.to_owned(), arguments.to_owned(), Some(id.to_owned())));
        }
    }
    (!turn.calls.is_empty()).then_some(turn)
}
