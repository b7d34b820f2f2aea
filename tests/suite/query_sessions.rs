//! QueryControlService sessions against a fake provider that speaks the
//! real OpenAI and Anthropic streaming formats (tests/suite/common/fake_llm.rs):
//! the invariants of a session under pause, resume and switch at random
//! points, Attach, fallback on mid-stream failures, rules, the result
//! cache, bad input, disconnects and persistence.

use std::time::Duration;

use crate::common::fake_llm::{ANSWER, FakeLlm};
use crate::common::sessions::*;
use crate::common::{TestServer, violated_fields};
use agentd::pb::v1::session_event::Kind;
use agentd::pb::v1::session_request::Command;
use agentd::pb::v1::*;
use tonic::Code;

fn pause() -> Command {
    Command::Pause(PauseCommand {})
}

fn resume(model: &str) -> Command {
    Command::Resume(ResumeCommand {
        model: model.into(),
    })
}

fn switch(model: &str) -> Command {
    Command::SwitchModel(SwitchModelCommand {
        model: model.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_providers_stream_the_whole_answer() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    for model in ["oa", "an"] {
        let mut s = Session::open(server.channel().await, start(model))
            .await
            .unwrap();
        let events = s.finish().await;
        assert_eq!(check_invariants(&events), *ANSWER, "{model}");
        let Some(Kind::Completed(c)) = &events.last().unwrap().kind else {
            panic!("{model}: last event {:?}", events.last())
        };
        assert_eq!(c.finish_reason, FinishReason::Stop as i32);
        let usage = c.usage.unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens),
            (10, 300),
            "{model}: provider usage"
        );
        assert!((c.cost_usd - (10.0 * 1e-6 + 300.0 * 2e-6)).abs() < 1e-12);

        let info = query_info(client(server.channel().await), s.query_id(), true).await;
        assert_eq!(info.state, QueryState::Completed as i32);
        assert_eq!(info.text, *ANSWER);
        assert_eq!(info.delta_count, 300);
        assert_eq!(info.model_history.len(), 1);
        assert_eq!(
            (info.model_history[0].from_seq, info.model_history[0].to_seq),
            (1, 300)
        );
        assert!(info.first_token_at.is_some() && info.finished_at.is_some());
    }
    // The Anthropic request carried the key from the key file and the API
    // version; the OpenAI one asked for usage in the stream.
    let requests = fake.requests();
    let an = requests.iter().find(|r| r.path == "/v1/messages").unwrap();
    assert!(
        an.headers
            .contains(&("x-api-key".into(), "test-key-123".into()))
    );
    assert!(
        an.headers
            .iter()
            .any(|(k, v)| k == "anthropic-version" && v == "2023-06-01")
    );
    let oa = requests
        .iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(oa.body["stream"], true);
    assert_eq!(oa.body["stream_options"]["include_usage"], true);
}

/// One trial: a session with commands at random moments.
async fn random_trial(server_channel: tonic::transport::Channel, seed: u64) -> Vec<SessionEvent> {
    let models = ["oa", "an", "oa-slow", "an-slow"];
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let first = models[next(2) as usize];
    let mut s = Session::open(server_channel, start(first)).await.unwrap();
    let mut paused = false;
    let mut current = first.to_owned();
    for _ in 0..(2 + next(5)) {
        // Let a random number of events go by while it runs.
        if !paused {
            for _ in 0..next(25) {
                match s.next().await {
                    Some(e) if matches!(e.kind, Some(Kind::Completed(_))) => {
                        return s.finish().await;
                    }
                    Some(_) => {}
                    None => return s.seen.clone(),
                }
            }
        }
        let target = models[next(models.len() as u64) as usize];
        match (paused, next(3)) {
            (false, 0) | (false, 1) => {
                s.send(pause()).await;
                // Unless the answer completes first, Paused comes.
                loop {
                    match s.next().await.map(|e| e.kind) {
                        Some(Some(Kind::Paused(_))) => break,
                        Some(Some(Kind::Completed(_))) | None => return s.finish().await,
                        _ => {}
                    }
                }
                paused = true;
            }
            (false, _) => {
                if target != current {
                    s.send(switch(target)).await;
                    current = target.to_owned();
                }
            }
            (true, 0) => {
                s.send(resume("")).await;
                paused = false;
            }
            (true, _) => {
                s.send(resume(target)).await;
                current = target.to_owned();
                paused = false;
            }
        }
    }
    if paused {
        s.send(resume("")).await;
    }
    s.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_switch_at_random_points_keep_every_invariant() {
    let fake = FakeLlm::start(Duration::from_millis(1)).await;
    let (server, _keys) = start_server(&fake).await;
    let channel = server.channel().await;
    let trials: Vec<_> = (0..50u64)
        .map(|seed| tokio::spawn(random_trial(channel.clone(), seed + 1)))
        .collect();
    let mut pauses = 0;
    let mut switches = 0;
    for (seed, trial) in trials.into_iter().enumerate() {
        let events = trial.await.unwrap();
        let text = check_invariants(&events);
        assert_eq!(text, *ANSWER, "trial {seed}: every word once, in order");
        assert!(
            matches!(events.last().unwrap().kind, Some(Kind::Completed(_))),
            "trial {seed}"
        );
        for e in &events {
            match e.kind {
                Some(Kind::Paused(_)) => pauses += 1,
                Some(Kind::ModelSwitched(_)) => switches += 1,
                Some(Kind::CommandRejected(ref r)) => panic!("trial {seed}: rejected {r:?}"),
                _ => {}
            }
        }
    }
    assert!(
        pauses >= 20 && switches >= 20,
        "the trials exercised pauses ({pauses}) and switches ({switches})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_means_no_deltas_until_resumed_and_unary_controls_work() {
    let fake = FakeLlm::start(Duration::from_millis(2)).await;
    let (server, _keys) = start_server(&fake).await;
    let mut s = Session::open(server.channel().await, start("oa"))
        .await
        .unwrap();
    s.until(|k| matches!(k, Kind::Delta(d) if d.seq == 5)).await;
    let id = s.query_id();
    let mut unary = client(server.channel().await);
    let seq = unary
        .pause(PauseRequest {
            query_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    let paused = s.until(|k| matches!(k, Kind::Paused(_))).await;
    let Some(Kind::Paused(p)) = paused.kind else {
        unreachable!()
    };
    assert_eq!(p.seq, seq);
    // Nothing arrives while paused.
    let quiet = tokio::time::timeout(Duration::from_millis(300), s.events.message()).await;
    assert!(quiet.is_err(), "no event while paused: {quiet:?}");
    let info = query_info(unary.clone(), id.clone(), false).await;
    assert_eq!(info.state, QueryState::Paused as i32);
    assert_eq!(info.delta_count, seq);

    // Pause while paused and Resume while running are refused, unary and on
    // the stream.
    let err = unary
        .pause(PauseRequest {
            query_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let switched = unary
        .switch_model(SwitchModelRequest {
            query_id: id.clone(),
            model: "an".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((switched.from_model.as_str(), switched.seq), ("oa", seq));
    let resumed = unary
        .resume(ResumeRequest {
            query_id: id.clone(),
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resumed.model, "an");
    let err = unary
        .resume(ResumeRequest {
            query_id: id.clone(),
            model: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    s.send(resume("")).await;
    let rejected = s.until(|k| matches!(k, Kind::CommandRejected(_))).await;
    let Some(Kind::CommandRejected(r)) = rejected.kind else {
        unreachable!()
    };
    assert_eq!(r.error.unwrap().reason, "WRONG_STATE");
    s.send(Command::Start(start("oa"))).await;
    s.until(|k| matches!(k, Kind::CommandRejected(_))).await;
    s.send(switch("nope")).await;
    let rejected = s.until(|k| matches!(k, Kind::CommandRejected(_))).await;
    let Some(Kind::CommandRejected(r)) = rejected.kind else {
        unreachable!()
    };
    assert_eq!(r.error.unwrap().code, Code::NotFound as i32);

    let events = s.finish().await;
    assert_eq!(check_invariants(&events), *ANSWER);
    // The model history records the switch at the seq of the pause.
    let info = query_info(unary.clone(), id.clone(), false).await;
    let history: Vec<_> = info
        .model_history
        .iter()
        .map(|s| (s.model.as_str(), s.from_seq, s.to_seq, s.reason))
        .collect();
    assert_eq!(
        history,
        vec![
            ("oa", 1, seq, SwitchReason::Requested as i32),
            ("an", seq + 1, 300, SwitchReason::Requested as i32)
        ]
    );
    // The continuation went to Anthropic as assistant prefill, without its
    // trailing space.
    let requests = fake.requests();
    let prefill = requests
        .iter()
        .rev()
        .find(|r| r.path == "/v1/messages")
        .unwrap();
    let messages = prefill.body["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["role"], "assistant");
    let expected: String = (1..=seq).map(|i| format!("w{i} ")).collect();
    assert_eq!(messages.last().unwrap()["content"], expected.trim_end());

    // Controls of a finished query are refused; unknown ones are not found.
    let err = unary
        .pause(PauseRequest {
            query_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = unary
        .terminate(TerminateRequest {
            query_id: "01NOPE".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_replays_exactly_what_the_session_saw() {
    let fake = FakeLlm::start(Duration::from_millis(1)).await;
    let (server, _keys) = start_server(&fake).await;
    let mut s = Session::open(server.channel().await, start("an"))
        .await
        .unwrap();
    s.until(|k| matches!(k, Kind::Delta(d) if d.seq == 40))
        .await;
    s.send(pause()).await;
    // The pause lands at whatever delta the driver had reached (40 or later).
    let paused_at = match s.until(|k| matches!(k, Kind::Paused(_))).await.kind {
        Some(Kind::Paused(p)) => p.seq,
        other => unreachable!("{other:?}"),
    };
    assert!(paused_at >= 40, "{paused_at}");
    let id = s.query_id();
    // An Attach started mid-query replays, then follows live.
    let mut live = client(server.channel().await)
        .attach(AttachRequest {
            query_id: id.clone(),
            from_seq: 1,
        })
        .await
        .unwrap()
        .into_inner();
    s.send(switch("oa")).await;
    s.send(resume("")).await;
    let session_events = s.finish().await;
    let mut attached = Vec::new();
    while let Some(m) = live.message().await.unwrap() {
        attached.push(m.event.unwrap());
    }
    assert_eq!(
        attached, session_events,
        "Attach from 1 equals the live stream"
    );
    check_invariants(&attached);

    // From the first delta after the pause: that delta and every event after
    // the delta before it.
    let from = paused_at + 1;
    let attached_later = attach_all(server.channel().await, id.clone(), from).await;
    let start_at = session_events
        .iter()
        .position(|e| matches!(&e.kind, Some(Kind::Delta(d)) if d.seq == paused_at))
        .unwrap()
        + 1;
    assert_eq!(attached_later, session_events[start_at..]);
    // The events between the paused delta and the next one (usage, the
    // pause, the switch) come first.
    let before_next: Vec<_> = attached_later
        .iter()
        .take_while(|e| !matches!(e.kind, Some(Kind::Delta(_))))
        .collect();
    assert!(
        before_next
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::Paused(_)))),
        "{before_next:?}"
    );
    assert!(
        matches!(&attached_later[before_next.len()].kind, Some(Kind::Delta(d)) if d.seq == from)
    );

    let err = client(server.channel().await)
        .attach(AttachRequest {
            query_id: id,
            from_seq: 302,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["from_seq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_stream_failures_fall_back_and_continue_the_answer() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    // An OpenAI error event after 20 words, an Anthropic overloaded_error
    // after 10, a dropped connection after 15, a 503 before any text: each
    // falls back (after one retry) and the answer continues word for word.
    for (model, first_words, to) in [
        ("oa-overload", 20, "an"),
        ("an-overload", 10, "oa"),
        ("an-drop", 15, "oa"),
        ("oa-down", 0, "an"),
    ] {
        let mut s = Session::open(server.channel().await, start(model))
            .await
            .unwrap();
        let events = s.finish().await;
        assert_eq!(check_invariants(&events), *ANSWER, "{model}");
        let switch = events
            .iter()
            .find_map(|e| match &e.kind {
                Some(Kind::ModelSwitched(m)) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{model}: no fallback"));
        assert_eq!(switch.to_model, to, "{model}");
        assert_eq!(switch.reason, SwitchReason::Fallback as i32);
        // The retry continued after the failed call's words and failed as
        // many words later again; then the fallback took over.
        assert_eq!(switch.seq, 2 * first_words, "{model}");
    }
    // When the whole chain fails, the query fails with the provider's error.
    let mut s = Session::open(server.channel().await, start("all-fail"))
        .await
        .unwrap();
    let events = s.finish().await;
    check_invariants(&events);
    let Some(Kind::Failed(f)) = &events.last().unwrap().kind else {
        panic!("{:?}", events.last())
    };
    let error = f.error.as_ref().unwrap();
    assert_eq!(error.reason, "PROVIDER_ERROR");
    assert!(error.message.contains("oa-down"), "{}", error.message);
    // A 400 is not retried and has no fallback.
    let before = fake.requests().len();
    let mut s = Session::open(server.channel().await, start("oa-bad"))
        .await
        .unwrap();
    let events = s.finish().await;
    assert!(matches!(events.last().unwrap().kind, Some(Kind::Failed(_))));
    assert_eq!(fake.requests().len(), before + 1, "no retry of a 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_switch_model_and_say_so() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut first_token = start("mute");
    first_token.rules = vec![Rule {
        name: "slow-start".into(),
        trigger: Some(rule::Trigger::FirstTokenLatencyExceeds(
            prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            },
        )),
        switch_to_model: "oa".into(),
    }];
    let mut budget = start("an");
    budget.rules = vec![Rule {
        name: "budget".into(),
        trigger: Some(rule::Trigger::OutputTokensExceed(50)),
        switch_to_model: "oa".into(),
    }];
    for (start, rule, at_seq) in [(first_token, "slow-start", 0), (budget, "budget", 51)] {
        let mut s = Session::open(server.channel().await, start).await.unwrap();
        let events = s.finish().await;
        assert_eq!(check_invariants(&events), *ANSWER, "{rule}");
        let fired = events
            .iter()
            .position(|e| matches!(&e.kind, Some(Kind::RuleFired(r)) if r.rule == rule))
            .unwrap_or_else(|| panic!("{rule} did not fire: {events:?}"));
        let Some(Kind::ModelSwitched(m)) = &events[fired + 1].kind else {
            panic!("{:?}", events[fired + 1])
        };
        assert_eq!(
            (m.to_model.as_str(), m.reason, m.seq),
            ("oa", SwitchReason::Rule as i32, at_seq)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_queries_are_answered_from_the_cache() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let mut cached = start("oa");
    cached.cache = None; // default: exact
    let mut first = Session::open(server.channel().await, cached.clone())
        .await
        .unwrap();
    let first_events = first.finish().await;
    let requests = fake.requests().len();
    let mut second = Session::open(server.channel().await, cached.clone())
        .await
        .unwrap();
    let events = second.finish().await;
    assert_eq!(
        fake.requests().len(),
        requests,
        "no provider call for a cache hit"
    );
    assert_eq!(check_invariants(&events), *ANSWER);
    let Some(Kind::CacheHit(hit)) = &events[1].kind else {
        panic!("{:?}", events[1])
    };
    assert_eq!(hit.kind, CacheKind::Exact as i32);
    assert_eq!(hit.source_query_id, first.query_id());
    assert!(
        events
            .iter()
            .all(|e| !matches!(&e.kind, Some(Kind::Delta(d)) if !d.cached))
    );
    assert_eq!(text_of(&events), text_of(&first_events));
    // Refresh skips the read; other params miss.
    cached.cache = Some(CachePolicy {
        refresh: true,
        ..Default::default()
    });
    Session::open(server.channel().await, cached.clone())
        .await
        .unwrap()
        .finish()
        .await;
    assert_eq!(fake.requests().len(), requests + 1);
    cached.cache = None;
    cached.params = Some(GenerationParams {
        max_tokens: 7,
        ..Default::default()
    });
    let events = Session::open(server.channel().await, cached)
        .await
        .unwrap()
        .finish()
        .await;
    assert_eq!(fake.requests().len(), requests + 2);
    let Some(Kind::Completed(c)) = &events.last().unwrap().kind else {
        panic!()
    };
    assert_eq!(c.finish_reason, FinishReason::Length as i32);
    assert_eq!(c.text, "w1 w2 w3 w4 w5 w6 w7 ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_starts_are_refused_with_the_field() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let err = Session::open(server.channel().await, start("nope"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::NotFound);
    let mut empty = start("oa");
    empty.messages.clear();
    let err = Session::open(server.channel().await, empty)
        .await
        .err()
        .unwrap();
    assert_eq!(violated_fields(&err), ["start.messages"]);
    // A role the contract does not define is refused as it is read.
    let mut unknown_role = start("oa");
    unknown_role.messages.push(Message {
        role: 0,
        content: "x".into(),
        ..Default::default()
    });
    let err = Session::open(server.channel().await, unknown_role)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["start.messages[1].role"]);
    // Every limit broken is named at once, with one path convention.
    let mut bad = start("oa");
    bad.params = Some(GenerationParams {
        temperature: Some(3.0),
        stop: vec![String::new()],
        ..Default::default()
    });
    bad.fallback_models = vec!["ghost".into()];
    let err = Session::open(server.channel().await, bad)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "start.params.temperature",
            "start.params.stop[0]",
            "start.fallback_models[0]"
        ]
    );
    // A model without its key is listed as unavailable, with the reason,
    // and a query on it fails cleanly.
    let models = list_models(server.channel().await).await;
    let nokey = models.iter().find(|m| m.alias == "nokey").unwrap();
    assert!(!nokey.available);
    assert!(
        nokey
            .unavailable_reason
            .contains("AGENTD_TEST_KEY_THAT_IS_NOT_SET")
    );
    assert!(models.iter().find(|m| m.alias == "an").unwrap().available);
    let events = Session::open(server.channel().await, start("nokey"))
        .await
        .unwrap()
        .finish()
        .await;
    let Some(Kind::Failed(f)) = &events.last().unwrap().kind else {
        panic!("{events:?}")
    };
    assert!(f.error.as_ref().unwrap().message.contains("not set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_keeps_the_query_unless_asked_to_end_it() {
    let fake = FakeLlm::start(Duration::from_millis(2)).await;
    let (server, _keys) = start_server(&fake).await;
    for terminate in [false, true] {
        let mut st = start("oa");
        st.terminate_on_disconnect = terminate;
        let mut s = Session::open(server.channel().await, st).await.unwrap();
        s.until(|k| matches!(k, Kind::Delta(d) if d.seq == 3)).await;
        let id = s.query_id();
        drop(s);
        let events = attach_all(server.channel().await, id, 0).await;
        let text = check_invariants(&events);
        match events.last().unwrap().kind.as_ref().unwrap() {
            Kind::Completed(_) if !terminate => assert_eq!(text, *ANSWER),
            Kind::Terminated(t) if terminate => {
                assert_eq!(t.reason, "client disconnected");
                assert!(text.len() < ANSWER.len());
            }
            other => panic!("terminate_on_disconnect={terminate}: ended with {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inject_adds_the_message_after_the_partial_answer() {
    let fake = FakeLlm::start(Duration::from_millis(2)).await;
    let (server, _keys) = start_server(&fake).await;
    let mut s = Session::open(server.channel().await, start("oa"))
        .await
        .unwrap();
    s.until(|k| matches!(k, Kind::Delta(d) if d.seq == 4)).await;
    s.send(Command::Inject(InjectCommand {
        message: Some(user("and now?")),
    }))
    .await;
    let injected = s.until(|k| matches!(k, Kind::Injected(_))).await;
    let Some(Kind::Injected(i)) = injected.kind else {
        unreachable!()
    };
    let events = s.finish().await;
    let text = check_invariants(&events);
    let partial: String = (1..=i.seq).map(|n| format!("w{n} ")).collect();
    assert_eq!(
        text,
        format!("{partial}{}", *ANSWER),
        "the new turn is a fresh answer"
    );
    let last = fake.requests().pop().unwrap();
    let roles: Vec<_> = last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("user".to_owned(), "count".to_owned()),
            ("assistant".to_owned(), partial),
            ("user".to_owned(), "and now?".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_queries_are_listed_and_survive_a_restart() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, keys) = start_server(&fake).await;
    let mut ids = Vec::new();
    for model in ["oa", "an", "oa", "an", "oa"] {
        let mut s = Session::open(server.channel().await, start(model))
            .await
            .unwrap();
        s.finish().await;
        ids.push(s.query_id());
    }
    let mut paused = Session::open(server.channel().await, start("oa-slow"))
        .await
        .unwrap();
    paused.until(|k| matches!(k, Kind::Delta(_))).await;
    paused.send(pause()).await;
    paused.until(|k| matches!(k, Kind::Paused(_))).await;
    ids.push(paused.query_id());
    ids.reverse();

    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_queries(server.channel().await, 0, 4, token)
            .await
            .unwrap();
        listed.extend(page.queries.iter().map(|q| q.query_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, ids, "newest first, each once");
    let paused_only = list_queries(
        server.channel().await,
        QueryState::Paused as i32,
        0,
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(paused_only.queries.len(), 1);
    // Like every List RPC, a page size above the maximum reads as the
    // maximum (common/page.rs).
    let all = list_queries(server.channel().await, 0, 5000, String::new())
        .await
        .unwrap();
    assert_eq!(all.queries.len(), ids.len());
    assert!(all.next_page_token.is_empty());
    let err = list_queries(server.channel().await, 0, 0, "garbage".into())
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);
    drop(paused);

    // After a restart the finished queries are read from the store.
    let data = server.stop_keeping_data().await;
    let mut config = crate::common::test_config().0;
    config.data_dir = data.path().join("data");
    config.query.models = Some(aliases(&fake, &keys.path().join("anthropic.key")));
    let server = TestServer::start_with(config, data, |s| s).await;
    let info = query_info(client(server.channel().await), ids[1].clone(), true).await;
    assert_eq!(info.state, QueryState::Completed as i32);
    assert_eq!(info.text, *ANSWER);
    let events = attach_all(server.channel().await, ids[1].clone(), 1).await;
    assert_eq!(check_invariants(&events), *ANSWER);
    let listed = list_queries(
        server.channel().await,
        QueryState::Completed as i32,
        100,
        String::new(),
    )
    .await
    .unwrap();
    assert_eq!(listed.queries.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_prompts_are_answered_from_the_semantic_cache_within_a_namespace() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;
    let semantic = |prompt: &str, namespace: &str| {
        let mut s = start("oa");
        s.messages = vec![user(prompt)];
        s.cache = Some(CachePolicy {
            mode: CacheMode::Semantic as i32,
            similarity_threshold: 0.8,
            namespace: namespace.into(),
            refresh: false,
        });
        s
    };
    let first = Session::open(
        server.channel().await,
        semantic("please count every word for me", "team-a"),
    )
    .await
    .unwrap()
    .finish()
    .await;
    let calls = fake.requests().len();
    let events = Session::open(
        server.channel().await,
        semantic("please count every word for me now", "team-a"),
    )
    .await
    .unwrap()
    .finish()
    .await;
    assert_eq!(
        fake.requests().len(),
        calls,
        "answered from the semantic cache"
    );
    let Some(Kind::CacheHit(hit)) = &events[1].kind else {
        panic!("{:?}", events[1])
    };
    assert_eq!(hit.kind, CacheKind::Semantic as i32);
    assert!(
        hit.similarity >= 0.8 && hit.similarity < 1.0,
        "{}",
        hit.similarity
    );
    assert_eq!(hit.source_query_id, first[0].query_id);
    assert_eq!(check_invariants(&events), *ANSWER);
    // Another namespace, or an unrelated prompt, goes to the model.
    for (prompt, namespace) in [
        ("please count every word for me now", "team-b"),
        ("what is the capital of france", "team-a"),
    ] {
        let events = Session::open(server.channel().await, semantic(prompt, namespace))
            .await
            .unwrap()
            .finish()
            .await;
        assert!(
            !events
                .iter()
                .any(|e| matches!(e.kind, Some(Kind::CacheHit(_)))),
            "{prompt} in {namespace}"
        );
    }
    assert_eq!(fake.requests().len(), calls + 2);
    // One semantic hit, three misses (the first query and the last two),
    // and every start looked in the exact cache first.
    let stats = client(server.channel().await)
        .get_query_stats(GetQueryStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.semantic_cache_hits, stats.semantic_cache_misses),
        (1, 3)
    );
    assert_eq!((stats.exact_cache_hits, stats.exact_cache_misses), (0, 4));
    assert_eq!(stats.started, 4);
    assert!(
        (stats.cache_hit_rate - 1.0 / 8.0).abs() < 1e-9,
        "{}",
        stats.cache_hit_rate
    );
    assert_eq!((stats.running, stats.paused), (0, 0));
}

/// After the final event the server keeps the stream open until the client
/// closes its side (ending it first would reset the request side, which
/// Node's HTTP/2 client reports as "Premature close"), but not forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_when_the_client_closes_its_side_or_after_a_grace() {
    let fake = FakeLlm::start(Duration::ZERO).await;
    let (server, _keys) = start_server(&fake).await;

    // A client that keeps its side open: the stream ends by itself, about
    // a second after Completed.
    let mut s = Session::open(server.channel().await, start("oa"))
        .await
        .unwrap();
    s.until(|k| matches!(k, Kind::Completed(_))).await;
    let completed = std::time::Instant::now();
    assert!(s.next().await.is_none(), "nothing after Completed");
    let held = completed.elapsed();
    assert!(held >= Duration::from_millis(500), "held open {held:?}");

    // A client that closes its side on Completed: the stream ends at once.
    let mut s = Session::open(server.channel().await, start("oa"))
        .await
        .unwrap();
    s.until(|k| matches!(k, Kind::Completed(_))).await;
    let completed = std::time::Instant::now();
    s.close();
    assert!(s.next().await.is_none(), "nothing after Completed");
    let held = completed.elapsed();
    assert!(held < Duration::from_millis(500), "held open {held:?}");
}
