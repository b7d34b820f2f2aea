//! The `local` provider: agentd's own Gemma 3 tokenizer and forward pass
//! against llama.cpp's on the same GGUF file (tests/fixtures/
//! gemma3_reference.json, made by scripts/python/make_local_fixture.py),
//! and sessions on the local model through the gRPC API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::TestServer;
use crate::common::sessions::{Session, check_invariants, list_models, query_info};
use agentd::pb::v1::query_control_service_client::QueryControlServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::*;
use agentd::query::{Gemma3, ModelAliasSpec, Tokenizer};

/// The GGUF file scripts/fetch-models installs; missing fails the test (a
/// skipped model test would pass while proving nothing).
fn gguf() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(agentd::query::DEFAULT_LOCAL_MODEL);
    assert!(
        path.exists(),
        "{} not found: run scripts/fetch-models",
        path.display()
    );
    path
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3_reference.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn local_alias(alias: &str) -> ModelAliasSpec {
    ModelAliasSpec {
        alias: alias.into(),
        provider: agentd::query::ProviderKind::Local,
        model_id: "gemma-3-270m".into(),
        base_url: None,
        api_key_env: None,
        api_key_file: None,
        path: Some(gguf()),
        context_window: 2048,
        input_cost_per_token_usd: 0.0,
        output_cost_per_token_usd: 0.0,
        fallbacks: vec![],
        supports_tools: None,
    }
}

async fn local_server() -> TestServer {
    let (mut config, dir) = crate::common::test_config();
    config.query.models = Some(vec![local_alias("local"), local_alias("local-b")]);
    config.query.local_threads = 1;
    TestServer::start_with(config, dir, |s| s).await
}

/// Tokens of each greedy answer that must equal llama.cpp's exactly.
const OPENING_TOKENS: usize = 6;

fn tokenizer() -> Tokenizer {
    let mut file = std::fs::File::open(gguf()).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    Tokenizer::from_gguf(&content).unwrap()
}

#[test]
fn the_tokenizer_rebuilt_from_gguf_matches_llama_cpp() {
    let tokenizer = tokenizer();
    assert_eq!(tokenizer.len(), 262_144);
    for case in reference()["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tokenizer.encode(text), expected, "{text:?}");
        assert_eq!(tokenizer.decode(&expected), text, "decode {text:?}");
    }
}

fn start(model: &str, user: &str, system: &str, max_tokens: u32) -> StartCommand {
    StartCommand {
        model: model.into(),
        messages: vec![Message {
            role: Role::User as i32,
            content: user.into(),
            ..Default::default()
        }],
        system_prompt: system.into(),
        params: Some(GenerationParams {
            max_tokens,
            temperature: Some(0.0),
            ..Default::default()
        }),
        cache: Some(CachePolicy {
            mode: CacheMode::Off as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_output_matches_llama_cpp() {
    let server = local_server().await;
    for case in reference()["generate"].as_array().unwrap() {
        let (user, system) = (
            case["user"].as_str().unwrap(),
            case["system"].as_str().unwrap(),
        );
        let n = case["ids"].as_array().unwrap().len() as u32;
        let mut s = Session::open(server.channel().await, start("local", user, system, n))
            .await
            .unwrap();
        let events = s.finish().await;
        let text = check_invariants(&events);
        // Greedy decoding of a base model meets near-ties within a few
        // tokens, where kernels of different rounding part ways; the
        // opening tokens must agree (teacher forcing below checks every
        // step).
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let opening = tokenizer().decode(&ids[..OPENING_TOKENS]);
        assert!(
            text.starts_with(&opening),
            "greedy answer to {user:?}: {text:?} does not start with llama.cpp's {opening:?}"
        );
        let Some(Kind::Completed(c)) = &events.last().unwrap().kind else {
            panic!("{:?}", events.last())
        };
        let prompt_len = case["prompt_ids"].as_array().unwrap().len() as u64;
        assert_eq!(
            c.usage.unwrap().input_tokens,
            prompt_len,
            "the prompt has llama.cpp's tokens"
        );
    }
}

/// Teacher forcing: llama.cpp's greedy tokens fed to agentd's forward pass
/// in one go; at every step the token llama.cpp chose must be agentd's top
/// choice or within a hair of it (a near-tie). A wrong activation, norm or
/// RoPE base puts it far down from the second token on.
#[test]
fn every_greedy_step_of_llama_cpp_is_a_top_choice_here() {
    let mut file = std::fs::File::open(gguf()).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut model = Gemma3::load(&content, &mut file, 2048).unwrap();
    let mut worst = 0f32;
    for case in reference()["generate"].as_array().unwrap() {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        model.truncate(0).unwrap();
        let mut logits = model.forward(&prompt).unwrap();
        for (step, &expected) in ids.iter().enumerate() {
            let l = logits.to_vec1::<f32>().unwrap();
            let best = l.iter().copied().fold(f32::MIN, f32::max);
            let gap = best - l[expected as usize];
            assert!(
                gap <= MAX_TIE_GAP,
                "step {step} of {:?}: llama.cpp's token {expected} is {gap} below our best",
                case["user"]
            );
            worst = worst.max(gap);
            logits = model.forward(&[expected]).unwrap();
        }
    }
    eprintln!("largest gap to a llama.cpp token: {worst}");
}

/// Logit distance under which two tokens count as tied.
const MAX_TIE_GAP: f32 = 0.5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sessions_pause_switch_resume_and_terminate() {
    let server = local_server().await;
    for trial in 0..3u64 {
        let mut s = Session::open(
            server.channel().await,
            start("local", "Tell me a long story about a lighthouse.", "", 48),
        )
        .await
        .unwrap();
        let pause_at = 3 + trial * 7;
        s.until(|k| matches!(k, Kind::Delta(d) if d.seq == pause_at))
            .await;
        s.send(Command::Pause(PauseCommand {})).await;
        s.until(|k| matches!(k, Kind::Paused(_))).await;
        let quiet = tokio::time::timeout(Duration::from_millis(300), s.events.message()).await;
        assert!(quiet.is_err(), "no event while paused");
        let other = if trial % 2 == 0 { "local-b" } else { "local" };
        s.send(Command::Resume(ResumeCommand {
            model: other.into(),
        }))
        .await;
        if trial == 2 {
            s.until(|k| matches!(k, Kind::Delta(_))).await;
            s.send(Command::Terminate(TerminateCommand {
                reason: "enough".into(),
            }))
            .await;
        }
        let events = s.finish().await;
        let text = check_invariants(&events);
        assert!(!text.is_empty());
        match events.last().unwrap().kind.as_ref().unwrap() {
            Kind::Completed(c) if trial < 2 => {
                // 48 tokens in total across both stretches, unless the
                // model ended its turn first.
                assert!(c.usage.unwrap().output_tokens <= 48, "{c:?}");
            }
            Kind::Terminated(t) if trial == 2 => assert_eq!(t.reason, "enough"),
            other => panic!("trial {trial}: {other:?}"),
        }
    }
    let models = list_models(server.channel().await).await;
    let local = models.iter().find(|m| m.alias == "local").unwrap();
    assert!(local.available, "{local:?}");
    assert_eq!(local.provider, ProviderKind::Local as i32);
}

/// How a local session ended: completed, or refused at Start.
enum Outcome {
    Completed { queued: bool },
    Refused,
}

/// One session on `model` to its end.
async fn run_one(channel: tonic::transport::Channel, model: &str, max_tokens: u32) -> Outcome {
    let request = start(model, "Count to ten.", "", max_tokens);
    match Session::open(channel, request).await {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            use tonic_types::StatusExt;
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.reason, "OVERLOADED", "{status:?}");
            Outcome::Refused
        }
        Ok(mut s) => {
            // Waiting behind others on a loaded machine can be long: read
            // the whole stream with a generous bound instead of `finish`'s
            // per-event one.
            s.close();
            let mut events = Vec::new();
            let read_all = async {
                while let Some(m) = s.events.message().await.expect("stream ok") {
                    events.push(m.event.expect("event set"));
                }
            };
            if tokio::time::timeout(Duration::from_secs(120), read_all)
                .await
                .is_err()
            {
                panic!("no end within 120 s; events so far: {events:?}");
            }
            check_invariants(&events);
            match events.last().and_then(|e| e.kind.as_ref()) {
                Some(Kind::Completed(_)) => Outcome::Completed {
                    queued: events
                        .iter()
                        .any(|e| matches!(e.kind, Some(Kind::Queued(_)))),
                },
                other => panic!("an admitted session ended with {other:?}, not Completed"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_local_queue_refuses_at_start_and_admitted_queries_complete() {
    let (mut config, dir) = crate::common::test_config();
    config.query.models = Some(vec![local_alias("local")]);
    // One decode thread keeps its pace when other tests load the cores.
    config.query.local_threads = 1;
    config.query.local_max_queued = 3;
    // Shorter than the wait of the last query in the queue: only the time
    // after the model starts on a query counts.
    config.query.first_token_timeout = Duration::from_secs(2);
    let server = TestServer::start_with(config, dir, |s| s).await;
    // The model loads in the background: wait for one answer first.
    assert!(matches!(
        run_one(server.channel().await, "local", 2).await,
        Outcome::Completed { .. }
    ));
    // One query runs (its first token is out) before the others come: the
    // running query holds no place in the queue, so the others compete for
    // its three places. (Sent all at once, the first of them could still be
    // waiting for the model's thread to wake when the rest were answered:
    // a full run under load admitted 3.)
    let mut first = Session::open(
        server.channel().await,
        start("local", "Count to ten.", "", 24),
    )
    .await
    .expect("an idle model admits a query");
    first.until(|k| matches!(k, Kind::Delta(_))).await;
    let mut sessions = Vec::new();
    for _ in 0..11 {
        let channel = server.channel().await;
        sessions.push(tokio::spawn(run_one(channel, "local", 12)));
    }
    let first_events = first.finish().await;
    assert!(
        matches!(
            first_events.last().and_then(|e| e.kind.as_ref()),
            Some(Kind::Completed(_))
        ),
        "{first_events:?}"
    );
    let (mut completed, mut refused, mut queued) = (1, 0, 0);
    for s in sessions {
        match s.await.unwrap() {
            Outcome::Completed { queued: q } => {
                completed += 1;
                queued += usize::from(q);
            }
            Outcome::Refused => refused += 1,
        }
    }
    assert_eq!(completed + refused, 12);
    assert!(
        completed >= 4,
        "one running and three waiting are admitted: {completed}"
    );
    assert!(
        refused >= 1,
        "more than the queue holds are refused at Start"
    );
    assert!(
        queued >= 2,
        "waiting queries are told their place: {queued}"
    );
    // The queue is empty again: a new query is admitted.
    assert!(matches!(
        run_one(server.channel().await, "local", 2).await,
        Outcome::Completed { .. }
    ));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_and_abandoned_local_queries_give_the_model_back() {
    let server = local_server().await;
    // A long answer, terminated after a few tokens; then a second, whose
    // client goes away with terminate_on_disconnect.
    let mut long = Session::open(
        server.channel().await,
        start("local", "Tell me a long story.", "", 2000),
    )
    .await
    .unwrap();
    long.until(|k| matches!(k, Kind::Delta(d) if d.seq == 3))
        .await;
    let mut waiting_request = start("local", "Tell me another long story.", "", 2000);
    waiting_request.terminate_on_disconnect = true;
    let mut waiting = Session::open(server.channel().await, waiting_request)
        .await
        .unwrap();
    waiting.until(|k| matches!(k, Kind::Queued(_))).await;
    let abandoned = waiting.query_id();
    drop(waiting);
    // The server sees the disconnect on its own time; wait for it so that
    // the abandoned query is out of the queue before the next one joins.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = query_info(
            QueryControlServiceClient::new(server.channel().await),
            &abandoned,
            false,
        )
        .await;
        if info.state == QueryState::Terminated as i32 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned query ends within 10 s: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    long.send(Command::Terminate(TerminateCommand {
        reason: "enough".into(),
    }))
    .await;
    long.finish().await;
    // Had either kept generating, a new query would wait behind up to
    // 4,000 tokens (about a minute); it starts at once (at most behind the
    // last token of the terminated one).
    let began = std::time::Instant::now();
    let mut next = Session::open(server.channel().await, start("local", "Hi.", "", 4))
        .await
        .unwrap();
    let first = next.until(|k| matches!(k, Kind::Delta(_))).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "first token after {:?}",
        began.elapsed()
    );
    let places: Vec<u64> = next
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Queued(q)) => Some(q.position),
            _ => None,
        })
        .collect();
    assert!(
        places.iter().all(|p| *p == 1),
        "nothing else waited: {places:?}"
    );
    let _ = first;
    next.finish().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_model_refuses_tools_naming_itself() {
    let server = local_server().await;
    let models = list_models(server.channel().await).await;
    assert!(models.iter().all(|m| !m.supports_tools), "{models:?}");
    let with_tools = StartCommand {
        tools: vec![ToolDefinition {
            name: "time".into(),
            ..Default::default()
        }],
        ..start("local", "What time is it?", "", 8)
    };
    let err = Session::open(server.channel().await, with_tools)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("\"local\""), "{err:?}");
    server.stop().await.unwrap();
}
