"""A whole QueryControl session from Python (grpc.aio, async iteration):
start on the local model, pause, switch model, resume, and check that the
stream keeps the session's promises: deltas numbered without gaps, nothing
while paused, the final text equal to all deltas joined."""

import asyncio

import grpc
import pytest

from agentd.v1 import query_pb2
from agentd_client import AsyncClient, Client, error_details


def start(model: str, max_tokens: int = 40) -> query_pb2.SessionRequest:
    return query_pb2.SessionRequest(
        start=query_pb2.StartCommand(
            model=model,
            messages=[query_pb2.Message(role=query_pb2.ROLE_USER, content="Tell me about the sea.")],
            params=query_pb2.GenerationParams(max_tokens=max_tokens, temperature=0.0),
            cache=query_pb2.CachePolicy(mode=query_pb2.CACHE_MODE_OFF),
        )
    )


def test_pause_switch_and_resume_in_one_session(server):
    async def run():
        async with AsyncClient(server.target) as client:
            call = client.query.Session()
            await call.write(start("local"))
            events, seqs, text = [], [], []
            paused_at = None
            async for response in call:
                event = response.event
                kind = event.WhichOneof("kind")
                events.append(kind)
                if kind == "delta":
                    assert paused_at is None or event.delta.seq > paused_at, "no delta while paused"
                    seqs.append(event.delta.seq)
                    text.append(event.delta.text)
                    if event.delta.seq == 4 and paused_at is None:
                        await call.write(query_pb2.SessionRequest(pause=query_pb2.PauseCommand()))
                elif kind == "paused":
                    paused_at = event.paused.seq
                    assert paused_at == seqs[-1]
                    # A second client sees the paused query.
                    info = await client.query.GetQuery(query_pb2.GetQueryRequest(query_id=event.query_id))
                    assert info.query.state == query_pb2.QUERY_STATE_PAUSED
                    await call.write(
                        query_pb2.SessionRequest(switch_model=query_pb2.SwitchModelCommand(model="local-b"))
                    )
                    await call.write(query_pb2.SessionRequest(resume=query_pb2.ResumeCommand()))
                elif kind == "completed":
                    assert event.completed.text == "".join(text)
                    # Nothing more to send: close our side so the server
                    # ends the stream at once.
                    await call.done_writing()
            return events, seqs, paused_at

    events, seqs, paused_at = asyncio.run(run())
    assert seqs == list(range(1, len(seqs) + 1)), "deltas 1, 2, 3, ... with no gaps"
    # The pause lands after delta 4, or later if the model was faster.
    assert paused_at >= 4
    assert events[0] == "started" and events[-1] == "completed"
    order = [e for e in events if e in ("paused", "model_switched", "resumed")]
    assert order == ["paused", "model_switched", "resumed"]


def test_unary_controls_and_errors(server):
    with Client(server.target) as client:
        models = client.query.ListQueryModels(query_pb2.ListQueryModelsRequest())
        assert {"local", "local-b"} <= {m.alias for m in models.models}
        with pytest.raises(grpc.RpcError) as err:
            client.query.Pause(query_pb2.PauseRequest(query_id="no-such-query"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_details(err.value).reason == "NOT_FOUND"

        # Start a query on a stream, then control it from this client.
        session = client.query.Session(iter([start("local", max_tokens=400)]))
        first = next(session).event
        assert first.WhichOneof("kind") == "started"
        query_id = first.query_id
        for response in session:
            if response.event.WhichOneof("kind") == "delta":
                break
        paused = client.query.Pause(query_pb2.PauseRequest(query_id=query_id))
        with pytest.raises(grpc.RpcError) as err:
            client.query.Pause(query_pb2.PauseRequest(query_id=query_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        ended = client.query.Terminate(query_pb2.TerminateRequest(query_id=query_id, reason="done"))
        assert ended.seq == paused.seq
        kinds = [r.event.WhichOneof("kind") for r in session]
        assert kinds[-1] == "terminated"
        info = client.query.GetQuery(query_pb2.GetQueryRequest(query_id=query_id, include_text=True))
        assert info.query.state == query_pb2.QUERY_STATE_TERMINATED
        assert info.query.delta_count == paused.seq
