"""A tool loop from Python against the real binary: the model (a fake
OpenAI-compatible server, tests/fake_openai.py) calls a client tool, the
test answers it on the Session stream or by the unary SubmitToolResult, and
the next turn quotes the result."""

import asyncio
import json

import grpc
import pytest

from agentd.v1 import query_pb2
from agentd_client import AsyncClient, Client, arguments, tool

WEATHER = tool(
    "weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def start(tools) -> query_pb2.SessionRequest:
    return query_pb2.SessionRequest(
        start=query_pb2.StartCommand(
            model="tools",
            messages=[query_pb2.Message(role=query_pb2.ROLE_USER, content="Weather in Paris?")],
            tools=tools,
            cache=query_pb2.CachePolicy(mode=query_pb2.CACHE_MODE_OFF),
        )
    )


def test_a_tool_loop_on_the_session_stream(server):
    async def run():
        async with AsyncClient(server.target) as client:
            call = client.query.Session()
            await call.write(start([WEATHER]))
            kinds, text = [], ""
            async for response in call:
                event = response.event
                kind = event.WhichOneof("kind")
                kinds.append(kind)
                if kind == "tool_call":
                    assert event.tool_call.name == "weather"
                    assert arguments(event.tool_call) == {"city": "Paris"}
                    info = await client.query.GetQuery(query_pb2.GetQueryRequest(query_id=event.query_id))
                    assert info.query.state == query_pb2.QUERY_STATE_AWAITING_TOOLS
                    result = query_pb2.ToolResultCommand(call_id=event.tool_call.call_id, result=json.dumps({"sky": "clear"}))
                    await call.write(query_pb2.SessionRequest(tool_result=result))
                elif kind == "delta":
                    text += event.delta.text
                elif kind == "completed":
                    assert event.completed.text == text
                    await call.done_writing()
            info = await client.query.GetQuery(query_pb2.GetQueryRequest(query_id=event.query_id))
            return kinds, text, info.query

    kinds, text, query = asyncio.run(run())
    assert kinds[0] == "started" and kinds[-1] == "completed"
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("delta")
    assert text == 'The weather: {"sky": "clear"}. '
    assert query.turns == 2
    assert query.tool_calls[0].done and query.tool_calls[0].result == '{"sky": "clear"}'


def test_a_result_from_another_client_and_the_errors(server):
    async def run():
        async with AsyncClient(server.target) as client:
            call = client.query.Session()
            await call.write(start([WEATHER]))
            async for response in call:
                event = response.event
                if event.WhichOneof("kind") == "tool_call":
                    break
            query_id, call_id = event.query_id, event.tool_call.call_id
            # A blocking client elsewhere answers the call.
            with Client(server.target) as other:
                done = other.query.SubmitToolResult(
                    query_pb2.SubmitToolResultRequest(query_id=query_id, call_id=call_id, error="no data")
                )
                assert done.pending == 0
                with pytest.raises(grpc.RpcError) as again:
                    other.query.SubmitToolResult(
                        query_pb2.SubmitToolResultRequest(query_id=query_id, call_id=call_id, result="x")
                    )
                assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            text = ""
            async for response in call:
                if response.event.WhichOneof("kind") == "delta":
                    text += response.event.delta.text
                elif response.event.WhichOneof("kind") == "completed":
                    await call.done_writing()
            return text

    assert asyncio.run(run()) == "The weather: error: no data. "


def test_the_local_model_refuses_tools(server):
    with Client(server.target) as client:
        models = client.query.ListQueryModels(query_pb2.ListQueryModelsRequest()).models
        assert {m.alias: m.supports_tools for m in models} == {"local": False, "local-b": False, "tools": True}
        call = client.query.Session(iter([query_pb2.SessionRequest(start=query_pb2.StartCommand(
            model="local",
            messages=[query_pb2.Message(role=query_pb2.ROLE_USER, content="hi")],
            tools=[WEATHER],
        ))]))
        with pytest.raises(grpc.RpcError) as refused:
            next(call)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert '"local"' in refused.value.details()
