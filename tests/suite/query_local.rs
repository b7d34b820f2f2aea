//! The `local` provider: agentd's own Gemma 3 tokenizer and forward pass
//! against llama.cpp's on the same GGUF file (tests/fixtures/
//! gemma3_reference.json, made by scripts/python/make_local_fixture.py),
//! and sessions on the local model through the gRPC API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::TestServer;
use crate::common::sessions::{Session, check_invariants, list_models};
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

fn local_alias(alias: &str) -> ModelAliasSpec {
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
    }
}

async fn local_server() -> TestServer {
    let (mut config, dir) = crate::common::test_config();
    config.query.models = Some(vec![local_alias("local"), local_alias("local-b")]);
    config.query.local_threads = 2;
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
