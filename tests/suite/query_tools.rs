//! Tool calling inside query sessions, against the fake provider speaking
//! the real OpenAI `tool_calls` and Anthropic `tool_use` streaming formats
//! (tests/suite/common/fake_llm.rs plays a script of tool calls given in
//! the first user message): the loop on both providers, parallel calls,
//! errors, schema checks, max_turns, pause, switch and fallback between
//! and within turns, Attach, restart, the built-in tools and the caches.

use std::time::Duration;

use crate::common::fake_llm::{ANSWER, FakeLlm, Received};
use crate::common::sessions::*;
use crate::common::structs::{from_struct, to_struct};
use crate::common::{TestServer, violated_fields};
use agentd::pb::v1::memory_service_client::MemoryServiceClient;
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::*;
use serde_json::{Value, json};
use tonic::Code;

/// A client tool `weather(city: string)`.
fn weather() -> ToolDefinition {
    ToolDefinition {
        name: "weather".into(),
        description: "The weather in a city.".into(),
        parameters: Some(to_struct(json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": false
        }))),
        ..Default::default()
    }
}

/// A client tool `time()` without arguments.
fn time() -> ToolDefinition {
    ToolDefinition {
        name: "time".into(),
        description: "The time now.".into(),
        ..Default::default()
    }
}

/// A built-in tool.
fn server_tool(name: &str) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        location: ToolLocation::Server as i32,
        ..Default::default()
    }
}

/// A Start on `model` whose fake plays `script`, offering `tools`.
fn start_tools(model: &str, script: &str, tools: Vec<ToolDefinition>) -> StartCommand {
    StartCommand {
        tools,
        ..start_with_user(model, script)
    }
}

fn start_with_user(model: &str, text: &str) -> StartCommand {
    StartCommand {
        messages: vec![user(text)],
        ..start(model)
    }
}

/// Reads to the next tool call.
async fn next_call(s: &mut Session) -> ToolCallEvent {
    match s.until(|k| matches!(k, Kind::ToolCall(_))).await.kind {
        Some(Kind::ToolCall(c)) => c,
        _ => unreachable!(),
    }
}

fn result(call_id: &str, text: &str) -> Command {
    Command::ToolResult(ToolResultCommand {
        call_id: call_id.into(),
        outcome: Some(tool_result_command::Outcome::Result(text.into())),
    })
}

fn tool_calls(events: &[SessionEvent]) -> Vec<ToolCallEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolCall(c)) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn tool_results(events: &[SessionEvent]) -> Vec<ToolResultEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::ToolResult(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn completed(events: &[SessionEvent]) -> CompletedEvent {
    match &events.last().unwrap().kind {
        Some(Kind::Completed(c)) => c.clone(),
        other => panic!("last event {other:?}"),
    }
}

/// The requests the fake got for `path`, in order.
fn requests_to(fake: &FakeLlm, path: &str) -> Vec<Received> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

const OPENAI: &str = "/v1/chat/completions";
const ANTHROPIC: &str = "/v1/messages";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_turn_tool_loop_on_each_provider() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    for (model, path) in [("oa", OPENAI), ("an", ANTHROPIC)] {
        let script = "say Let me check.\ncall weather {\"city\": \"Paris\", \"days\": 2}";
        let mut s = Session::open(
            server.channel().await,
            start_tools(model, script, vec![weather()]),
        )
        .await
        .unwrap();
        let call = next_call(&mut s).await;
        assert_eq!(call.name, "weather");
        assert_eq!(call.turn, 1);
        assert_eq!(call.location, ToolLocation::Client as i32);
        assert_eq!(
            from_struct(call.arguments.as_ref().unwrap()),
            json!({"city": "Paris", "days": 2.0}),
            "{model}: arguments assembled from fragments"
        );
        let info = query_info(client(server.channel().await), s.query_id(), false).await;
        assert_eq!(info.state, QueryState::AwaitingTools as i32, "{model}");
        assert_eq!(info.turns, 1);
        assert!(!info.tool_calls[0].done);

        s.send(result(&call.call_id, "{\"sky\": \"clear\"}")).await;
        let events = s.finish().await;
        let text = check_invariants(&events);
        assert_eq!(text, format!("Let me check. {}", *ANSWER), "{model}");
        let done = completed(&events);
        assert_eq!(done.finish_reason, FinishReason::Stop as i32);
        assert_eq!(done.text, text);
        let results = tool_results(&events);
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].content, "{\"sky\": \"clear\"}");
        assert!(!results[0].is_error);

        let info = query_info(client(server.channel().await), s.query_id(), false).await;
        assert_eq!(info.turns, 2, "{model}");
        let record = &info.tool_calls[0];
        assert!(record.done && !record.is_error);
        assert_eq!(record.result, "{\"sky\": \"clear\"}");
        assert_eq!(record.call.as_ref().unwrap().id, call.call_id);

        // The second turn's request carried the whole history in the
        // provider's own format.
        let requests = requests_to(&fake, path);
        let second = &requests.last().unwrap().body;
        let messages = second["messages"].as_array().unwrap();
        if path == OPENAI {
            assert_eq!(second["tools"][0]["function"]["name"], "weather");
            let assistant = &messages[messages.len() - 2];
            assert_eq!(assistant["content"], "Let me check. ");
            assert_eq!(assistant["tool_calls"][0]["id"], call.call_id);
            assert_eq!(
                serde_json::from_str::<Value>(
                    assistant["tool_calls"][0]["function"]["arguments"]
                        .as_str()
                        .unwrap()
                )
                .unwrap(),
                json!({"city": "Paris", "days": 2})
            );
            let tool = messages.last().unwrap();
            assert_eq!(tool["role"], "tool");
            assert_eq!(tool["tool_call_id"], call.call_id);
        } else {
            assert_eq!(second["tools"][0]["input_schema"]["required"][0], "city");
            let assistant = &messages[messages.len() - 2]["content"];
            assert_eq!(assistant[0]["text"], "Let me check. ");
            assert_eq!(assistant[1]["type"], "tool_use");
            assert_eq!(assistant[1]["input"]["city"], "Paris");
            let results = &messages.last().unwrap()["content"];
            assert_eq!(results[0]["type"], "tool_result");
            assert_eq!(results[0]["tool_use_id"], call.call_id);
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_calls_take_results_from_any_client_once_each() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    // The provider gives both calls the same id: agentd gives the second
    // its own.
    let script = "call@same weather {\"city\": \"Oslo\"}\ncall@same time {}";
    let mut s = Session::open(
        server.channel().await,
        start_tools("oa", script, vec![weather(), time()]),
    )
    .await
    .unwrap();
    s.until(|k| matches!(k, Kind::ToolCall(c) if c.name == "time"))
        .await;
    let calls = tool_calls(&s.seen);
    assert_eq!(calls.len(), 2, "both calls of the turn");
    assert_ne!(calls[0].call_id, calls[1].call_id);
    let id = s.query_id();
    let mut unary = client(server.channel().await);
    let submit = |call_id: &str, outcome| SubmitToolResultRequest {
        query_id: id.clone(),
        call_id: call_id.into(),
        outcome: Some(outcome),
    };
    use submit_tool_result_request::Outcome;
    // The second call first, from another client; the first fails.
    let pending = unary
        .submit_tool_result(submit(&calls[1].call_id, Outcome::Result("12:00".into())))
        .await
        .unwrap()
        .into_inner()
        .pending;
    assert_eq!(pending, 1);
    let again = unary
        .submit_tool_result(submit(&calls[1].call_id, Outcome::Result("13:00".into())))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let unknown = unary
        .submit_tool_result(submit("call_nope", Outcome::Result("x".into())))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let empty = unary
        .submit_tool_result(SubmitToolResultRequest {
            query_id: id.clone(),
            call_id: calls[0].call_id.clone(),
            outcome: None,
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&empty), ["outcome"]);
    s.send(Command::ToolResult(ToolResultCommand {
        call_id: calls[0].call_id.clone(),
        outcome: Some(tool_result_command::Outcome::Error(
            "weather service down".into(),
        )),
    }))
    .await;
    let events = s.finish().await;
    assert_eq!(check_invariants(&events), *ANSWER);
    let results = tool_results(&events);
    assert_eq!(results.len(), 2);
    assert!(results[1].is_error);
    // Once finished, results are refused.
    let late = unary
        .submit_tool_result(submit(&calls[0].call_id, Outcome::Result("x".into())))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    // The next turn saw both results, in call order, the error marked.
    let last = requests_to(&fake, OPENAI).pop().unwrap().body;
    let m = last["messages"].as_array().unwrap();
    let tools: Vec<&Value> = m.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["tool_call_id"], calls[0].call_id);
    assert_eq!(tools[0]["content"], "error: weather service down");
    assert_eq!(tools[1]["content"], "12:00");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_answered_with_an_error_and_get_one_more_turn() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    // Turn 1: arguments against the schema; turn 2: not JSON at all
    // (only one invalid turn in a row each time a valid one comes
    // between); turn 3: valid.
    let script = "call weather {\"city\": 5, \"days\": 0}\n---\ncall weather {\"city\": \"Rome\"}\n---\ncall weather {\"city\": \n---\ncall weather {\"city\": \"Oslo\"}";
    let mut s = Session::open(
        server.channel().await,
        start_tools("an", script, vec![weather()]),
    )
    .await
    .unwrap();
    // Turn 1's call is answered by agentd; turn 2's waits for the client.
    let second = loop {
        let e = s.next().await.unwrap();
        if let Some(Kind::ToolCall(c)) = e.kind
            && c.turn == 2
        {
            break c;
        }
    };
    let results = tool_results(&s.seen);
    assert_eq!(results.len(), 1);
    assert!(results[0].is_error);
    assert!(
        results[0].content.contains("/city") && results[0].content.contains("/days"),
        "the error names each wrong field: {}",
        results[0].content
    );
    s.send(result(&second.call_id, "sunny")).await;
    let fourth = loop {
        let e = s.next().await.unwrap();
        if let Some(Kind::ToolCall(c)) = e.kind
            && c.turn == 4
        {
            break c;
        }
    };
    let third = tool_calls(&s.seen)
        .into_iter()
        .find(|c| c.turn == 3)
        .unwrap();
    assert!(third.arguments.is_none());
    assert_eq!(third.invalid_arguments, "{\"city\": ");
    let results = tool_results(&s.seen);
    assert!(results.last().unwrap().content.contains("not valid JSON"));
    s.send(result(&fourth.call_id, "rain")).await;
    let events = s.finish().await;
    assert_eq!(check_invariants(&events), *ANSWER);

    // Two invalid turns in a row fail the query.
    let script = "call weather {}\n---\ncall weather {\"town\": \"x\"}";
    let mut s = Session::open(
        server.channel().await,
        start_tools("oa", script, vec![weather()]),
    )
    .await
    .unwrap();
    let events = s.finish().await;
    let Some(Kind::Failed(f)) = &events.last().unwrap().kind else {
        panic!("{:?}", events.last())
    };
    assert!(
        f.error
            .as_ref()
            .unwrap()
            .message
            .contains("invalid tool calls"),
        "{f:?}"
    );
    assert_eq!(tool_results(&events).len(), 2);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_turns_ends_a_runaway_loop() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let script = "call time {}\n---\ncall time {}\n---\ncall time {}";
    let mut s = Session::open(
        server.channel().await,
        StartCommand {
            max_turns: 2,
            ..start_tools("oa", script, vec![time()])
        },
    )
    .await
    .unwrap();
    let first = next_call(&mut s).await;
    s.send(result(&first.call_id, "noon")).await;
    let events = s.finish().await;
    let done = completed(&events);
    assert_eq!(done.finish_reason, FinishReason::MaxTurns as i32);
    let calls = tool_calls(&events);
    assert_eq!(calls.len(), 2, "the second turn's call is recorded");
    let results = tool_results(&events);
    assert!(results[1].is_error && results[1].content.contains("max_turns"));
    let info = query_info(client(server.channel().await), s.query_id(), false).await;
    assert_eq!(info.turns, 2);
    assert_eq!(info.state, QueryState::Completed as i32);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_while_awaiting_tools_and_while_the_next_turn_streams() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut s = Session::open(
        server.channel().await,
        StartCommand {
            params: Some(GenerationParams {
                max_tokens: 40,
                ..Default::default()
            }),
            ..start_tools("oa-slow", "call time {}", vec![time()])
        },
    )
    .await
    .unwrap();
    let call = next_call(&mut s).await;
    s.send(Command::Pause(PauseCommand {})).await;
    s.until(|k| matches!(k, Kind::Paused(_))).await;
    // A result while paused is taken; the next turn waits for Resume.
    s.send(result(&call.call_id, "noon")).await;
    s.until(|k| matches!(k, Kind::ToolResult(_))).await;
    let info = query_info(client(server.channel().await), s.query_id(), false).await;
    assert_eq!(info.state, QueryState::Paused as i32);
    let calls_before = requests_to(&fake, OPENAI).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        requests_to(&fake, OPENAI).len(),
        calls_before,
        "no model call while paused"
    );
    s.send(Command::Resume(ResumeCommand::default())).await;
    s.until(|k| matches!(k, Kind::Delta(d) if d.seq == 5)).await;
    s.send(Command::Pause(PauseCommand {})).await;
    s.until(|k| matches!(k, Kind::Paused(_))).await;
    s.send(Command::Resume(ResumeCommand::default())).await;
    let events = s.finish().await;
    let text = check_invariants(&events);
    // max_tokens counts every turn: the first turn's call took one token.
    let words: String = ANSWER.split_inclusive(' ').take(39).collect();
    assert_eq!(
        text, words,
        "the second turn, paused and resumed, lost nothing"
    );
    assert_eq!(
        completed(&events).finish_reason,
        FinishReason::Length as i32
    );
    assert_eq!(tool_calls(&events).len(), 1, "the tool was called once");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_between_turns_translates_the_history() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut s = Session::open(
        server.channel().await,
        start_tools(
            "oa",
            "say Checking.\ncall weather {\"city\": \"Lima\"}",
            vec![weather()],
        ),
    )
    .await
    .unwrap();
    let call = next_call(&mut s).await;
    s.send(Command::SwitchModel(SwitchModelCommand {
        model: "an".into(),
    }))
    .await;
    s.until(|k| matches!(k, Kind::ModelSwitched(_))).await;
    s.send(result(&call.call_id, "warm")).await;
    let events = s.finish().await;
    assert_eq!(check_invariants(&events), format!("Checking. {}", *ANSWER));
    let an = requests_to(&fake, ANTHROPIC).pop().unwrap().body;
    let m = an["messages"].as_array().unwrap();
    assert_eq!(
        m.len(),
        3,
        "user, assistant with tool_use, user with tool_result"
    );
    assert_eq!(m[1]["role"], "assistant");
    assert_eq!(m[1]["content"][0]["text"], "Checking. ");
    assert_eq!(m[1]["content"][1]["id"], call.call_id);
    assert_eq!(m[1]["content"][1]["name"], "weather");
    assert_eq!(m[1]["content"][1]["input"], json!({"city": "Lima"}));
    assert_eq!(m[2]["content"][0]["tool_use_id"], call.call_id);
    assert_eq!(m[2]["content"][0]["content"], "warm");
    assert_eq!(an["tools"][0]["name"], "weather");
    // A model that cannot call tools is refused (the fake's aliases all
    // can; the local one cannot: see query_local.rs).
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_mid_turn_continues_without_running_tools_again() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    // an-drop cuts its stream after 15 words, then falls back to oa.
    let mut s = Session::open(
        server.channel().await,
        start_tools(
            "an-drop",
            "call memory_put {\"namespace\": \"agent\", \"key\": \"runs\", \"value\": \"1\"}",
            vec![server_tool("memory_put")],
        ),
    )
    .await
    .unwrap();
    let events = s.finish().await;
    assert_eq!(check_invariants(&events), *ANSWER);
    assert_eq!(tool_calls(&events).len(), 1);
    assert_eq!(tool_results(&events).len(), 1);
    assert_eq!(
        tool_results(&events)[0].content,
        "{\"version\":1}",
        "the server tool ran once"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, Some(Kind::ModelSwitched(m)) if m.reason == SwitchReason::Fallback as i32))
    );
    // The fallback got the tool history and the answer so far.
    let oa = requests_to(&fake, OPENAI).pop().unwrap().body;
    let m = oa["messages"].as_array().unwrap();
    assert!(
        m.iter()
            .any(|m| m["role"] == "tool" && m["content"] == "{\"version\":1}")
    );
    assert_eq!(m.last().unwrap()["role"], "assistant", "the continuation");
    let entry = MemoryServiceClient::new(server.channel().await)
        .get(GetRequest {
            namespace: "agent".into(),
            key: "runs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(entry.version, 1, "written once");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_replays_the_loop_and_a_restart_keeps_the_history() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, keys) = start_server(&fake).await;
    let mut s = Session::open(
        server.channel().await,
        start_tools("oa", "call weather {\"city\": \"Kyiv\"}", vec![weather()]),
    )
    .await
    .unwrap();
    let call = next_call(&mut s).await;
    s.send(result(&call.call_id, "snow")).await;
    let live = s.finish().await;
    let id = s.query_id();
    let replayed = attach_all(server.channel().await, &id, 0).await;
    assert_eq!(
        replayed, live,
        "Attach replays exactly what the session saw"
    );

    let data = server.stop_keeping_data().await;
    let mut config = crate::common::test_config().0;
    config.data_dir = data.path().join("data");
    config.query.models = Some(aliases(&fake, &keys.path().join("anthropic.key")));
    let server = TestServer::start_with(config, data, |s| s).await;
    let after = attach_all(server.channel().await, &id, 0).await;
    assert_eq!(after, live, "the whole history after a restart");
    let info = query_info(client(server.channel().await), &id, true).await;
    assert_eq!(info.turns, 2);
    assert_eq!(info.tool_calls.len(), 1);
    assert_eq!(info.tool_calls[0].result, "snow");
    assert_eq!(
        from_struct(
            info.tool_calls[0]
                .call
                .as_ref()
                .unwrap()
                .arguments
                .as_ref()
                .unwrap()
        ),
        json!({"city": "Kyiv"})
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_tools_use_the_memory_and_embedding_engines() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut memory = MemoryServiceClient::new(server.channel().await);
    memory
        .create_collection(CreateCollectionRequest {
            name: "notes".into(),
            metric: Metric::Cosine as i32,
            embedding_model: "hash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let text = |id: &str, t: &str, topic: &str| PointInput {
        id: id.into(),
        data: Some(point_input::Data::Text(t.into())),
        payload: Some(to_struct(json!({"topic": topic}))),
    };
    memory
        .upsert(UpsertRequest {
            collection: "notes".into(),
            points: vec![
                text("a", "cats sleep all day", "pets"),
                text("b", "lunch in Lisbon", "travel"),
                text("c", "cats sleep all day long", "other"),
            ],
        })
        .await
        .unwrap();
    let script = "call memory_search {\"collection\": \"notes\", \"query\": \"cats sleep all day\", \"k\": 2, \"filter\": {\"topic\": \"pets\"}}\ncall memory_put {\"namespace\": \"agent\", \"key\": \"seen\", \"value\": \"cats\"}\n---\ncall memory_get {\"namespace\": \"agent\", \"key\": \"seen\"}\ncall embed {\"texts\": [\"hello\"]}\ncall memory_search {\"collection\": \"ghost\", \"query\": \"x\"}";
    let tools = ["memory_search", "memory_put", "memory_get", "embed"]
        .into_iter()
        .map(server_tool)
        .collect();
    let mut s = Session::open(server.channel().await, start_tools("oa", script, tools))
        .await
        .unwrap();
    let events = s.finish().await;
    assert_eq!(check_invariants(&events), *ANSWER);
    // Server tools run at once, so results come in any order: take them
    // in call order.
    let all = tool_results(&events);
    assert_eq!(all.len(), 5);
    let results: Vec<ToolResultEvent> = tool_calls(&events)
        .iter()
        .map(|c| all.iter().find(|r| r.call_id == c.call_id).unwrap().clone())
        .collect();
    let json_of = |i: usize| serde_json::from_str::<Value>(&results[i].content).unwrap();
    let hits = json_of(0)["hits"].as_array().unwrap().clone();
    assert_eq!(hits.len(), 1, "the filter keeps the pets only: {hits:?}");
    assert_eq!(hits[0]["id"], "a");
    assert_eq!(hits[0]["payload"]["topic"], "pets");
    assert_eq!(json_of(1)["version"], 1);
    assert_eq!(json_of(2)["value"], "cats");
    assert_eq!(json_of(3)["dimensions"], 384);
    assert!(results[4].is_error, "{results:?}");
    assert!(
        results[4].content.contains("ghost"),
        "{}",
        results[4].content
    );
    // Every call was agentd's: located on the server.
    assert!(
        tool_calls(&events)
            .iter()
            .all(|c| c.location == ToolLocation::Server as i32)
    );
    // The model was told agentd's own descriptions and schemas.
    let first = requests_to(&fake, OPENAI)[0].body.clone();
    let search = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "memory_search")
        .unwrap()
        .clone();
    assert_eq!(
        search["function"]["parameters"]["required"],
        json!(["collection", "query"])
    );
    assert!(
        !search["function"]["description"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let seen = memory
        .get(GetRequest {
            namespace: "agent".into(),
            key: "seen".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entry
        .unwrap();
    assert_eq!(seen.value, b"cats");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tool_definitions_are_refused_naming_the_field() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let bad = StartCommand {
        tools: vec![
            ToolDefinition {
                name: "bad name!".into(),
                ..time()
            },
            ToolDefinition {
                parameters: Some(to_struct(json!({"type": "string"}))),
                ..weather()
            },
            weather(),
            ToolDefinition {
                description: "mine".into(),
                ..server_tool("memory_search")
            },
            server_tool("rm_rf"),
        ],
        tool_choice: Some(ToolChoice {
            mode: ToolChoiceMode::Named as i32,
            name: "ghost".into(),
        }),
        max_turns: 1000,
        ..start_with_user("oa", "hi")
    };
    let err = Session::open(server.channel().await, bad).await.err();
    let err = match err {
        Some(e) => e,
        None => panic!("accepted"),
    };
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "start.max_turns",
            "start.tool_choice.name",
            "start.tools[0].name",
            "start.tools[1].parameters",
            "start.tools[2].name",
            "start.tools[3]",
            "start.tools[4].name",
        ]
    );
    // Tool history that does not add up.
    let mut assistant = Message {
        role: Role::Assistant as i32,
        ..Default::default()
    };
    assistant.tool_calls.push(agentd::pb::v1::ToolCall {
        id: "c1".into(),
        name: "time".into(),
        ..Default::default()
    });
    let orphan = Message {
        role: Role::Tool as i32,
        tool_call_id: "c9".into(),
        content: "x".into(),
        ..Default::default()
    };
    let history = StartCommand {
        messages: vec![user("what time is it?"), assistant, orphan],
        tools: vec![time()],
        ..start("oa")
    };
    let err = Session::open(server.channel().await, history)
        .await
        .err()
        .unwrap();
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "start.messages[1].tool_calls",
            "start.messages[2].tool_call_id"
        ]
    );
    // Worker tools name the capability of their workers (and need the
    // Agent service: tests/suite/agents_tools.rs).
    let worker = StartCommand {
        tools: vec![ToolDefinition {
            location: ToolLocation::Worker as i32,
            ..time()
        }],
        ..start_with_user("oa", "hi")
    };
    let err = Session::open(server.channel().await, worker)
        .await
        .err()
        .unwrap();
    assert_eq!(
        violated_fields(&err),
        ["start.tools[0].worker_capability"],
        "{err:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_only_identical_tool_conversations_without_calls() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let exact = |start: StartCommand| StartCommand {
        cache: Some(CachePolicy {
            mode: CacheMode::Exact as i32,
            ..Default::default()
        }),
        ..start
    };
    let cached = |events: &[SessionEvent]| {
        events
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::CacheHit(_))))
    };
    // No calls made (no script): cached, for the same tools only.
    let plain = exact(start_tools("oa", "hello", vec![time()]));
    let first = Session::open(server.channel().await, plain.clone())
        .await
        .unwrap()
        .finish()
        .await;
    assert!(!cached(&first));
    let again = Session::open(server.channel().await, plain.clone())
        .await
        .unwrap()
        .finish()
        .await;
    assert!(cached(&again), "same history and tools: a hit");
    let other_tools = exact(start_tools("oa", "hello", vec![time(), weather()]));
    let other = Session::open(server.channel().await, other_tools)
        .await
        .unwrap()
        .finish()
        .await;
    assert!(!cached(&other), "other tools: a miss");
    // A query that called tools is never cached: its answer depends on
    // what the tools gave.
    let looped = exact(start_tools("oa", "call time {}", vec![time()]));
    for _ in 0..2 {
        let mut s = Session::open(server.channel().await, looped.clone())
            .await
            .unwrap();
        let call = next_call(&mut s).await;
        s.send(result(&call.call_id, "noon")).await;
        let events = s.finish().await;
        assert!(!cached(&events));
    }
    // A similar prompt is no answer to a tool conversation: the semantic
    // cache is not even looked at.
    let semantic = StartCommand {
        cache: Some(CachePolicy {
            mode: CacheMode::Semantic as i32,
            similarity_threshold: 0.1,
            ..Default::default()
        }),
        ..start_tools("oa", "hello there", vec![time()])
    };
    let before = client(server.channel().await)
        .get_query_stats(GetQueryStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let events = Session::open(server.channel().await, semantic)
        .await
        .unwrap()
        .finish()
        .await;
    assert!(!cached(&events));
    let after = client(server.channel().await)
        .get_query_stats(GetQueryStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (after.semantic_cache_hits, after.semantic_cache_misses),
        (before.semantic_cache_hits, before.semantic_cache_misses)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_with_tool_history_can_be_started() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut assistant = Message {
        role: Role::Assistant as i32,
        content: "Checking.".into(),
        ..Default::default()
    };
    assistant.tool_calls.push(agentd::pb::v1::ToolCall {
        id: "prior_1".into(),
        name: "weather".into(),
        arguments: Some(to_struct(json!({"city": "Oslo"}))),
        ..Default::default()
    });
    let answer = Message {
        role: Role::Tool as i32,
        tool_call_id: "prior_1".into(),
        content: "snow".into(),
        ..Default::default()
    };
    for model in ["oa", "an"] {
        let history = StartCommand {
            messages: vec![user("Weather in Oslo?"), assistant.clone(), answer.clone()],
            tools: vec![weather()],
            ..start(model)
        };
        let events = Session::open(server.channel().await, history)
            .await
            .unwrap()
            .finish()
            .await;
        assert_eq!(check_invariants(&events), *ANSWER, "{model}");
    }
    let oa = requests_to(&fake, OPENAI).pop().unwrap().body;
    let m = oa["messages"].as_array().unwrap();
    assert_eq!(m[1]["tool_calls"][0]["id"], "prior_1");
    assert_eq!(m[2]["tool_call_id"], "prior_1");
    let an = requests_to(&fake, ANTHROPIC).pop().unwrap().body;
    let m = an["messages"].as_array().unwrap();
    assert_eq!(m[1]["content"][1]["input"], json!({"city": "Oslo"}));
    assert_eq!(m[2]["content"][0]["content"], "snow");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_result_in_time_is_answered_with_an_error() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let slow_tool = ToolDefinition {
        timeout: Some(prost_types::Duration {
            seconds: 0,
            nanos: 300_000_000,
        }),
        ..time()
    };
    let mut s = Session::open(
        server.channel().await,
        start_tools("oa", "call time {}", vec![slow_tool]),
    )
    .await
    .unwrap();
    let events = s.finish().await;
    assert_eq!(check_invariants(&events), *ANSWER, "the loop went on");
    let results = tool_results(&events);
    assert!(results[0].is_error, "{results:?}");
    assert!(
        results[0].content.contains("no result within"),
        "{results:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_within_the_next_turn_and_terminate_while_awaiting() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    // Switch while the turn after the tools streams: the new provider gets
    // the tool history in its format and the answer so far as prefill.
    let mut s = Session::open(
        server.channel().await,
        StartCommand {
            params: Some(GenerationParams {
                max_tokens: 30,
                ..Default::default()
            }),
            ..start_tools("oa-slow", "call time {}", vec![time()])
        },
    )
    .await
    .unwrap();
    let call = next_call(&mut s).await;
    s.send(result(&call.call_id, "noon")).await;
    s.until(|k| matches!(k, Kind::Delta(d) if d.seq == 3)).await;
    s.send(Command::SwitchModel(SwitchModelCommand {
        model: "an-slow".into(),
    }))
    .await;
    let events = s.finish().await;
    let text = check_invariants(&events);
    let words: String = ANSWER.split_inclusive(' ').take(29).collect();
    assert_eq!(text, words);
    let an = requests_to(&fake, ANTHROPIC).pop().unwrap().body;
    let m = an["messages"].as_array().unwrap();
    assert_eq!(m[1]["content"][0]["type"], "tool_use");
    assert_eq!(m[2]["content"][0]["tool_use_id"], call.call_id);
    assert_eq!(m[3]["role"], "assistant", "the answer so far as prefill");
    assert!(m[3]["content"].as_str().unwrap().starts_with("w1 w2 w3"));

    // Terminate while awaiting: the query ends, the call stays unanswered,
    // and a late result is refused.
    let mut s = Session::open(
        server.channel().await,
        start_tools("oa", "call time {}", vec![time()]),
    )
    .await
    .unwrap();
    let call = next_call(&mut s).await;
    s.send(Command::Terminate(TerminateCommand {
        reason: "user left".into(),
    }))
    .await;
    let events = s.finish().await;
    assert!(matches!(
        events.last().unwrap().kind,
        Some(Kind::Terminated(_))
    ));
    let late = client(server.channel().await)
        .submit_tool_result(SubmitToolResultRequest {
            query_id: s.query_id(),
            call_id: call.call_id.clone(),
            outcome: Some(submit_tool_result_request::Outcome::Result("noon".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    let info = query_info(client(server.channel().await), s.query_id(), false).await;
    assert_eq!(info.state, QueryState::Terminated as i32);
    assert!(!info.tool_calls[0].done);
    server.stop().await.unwrap();
}
