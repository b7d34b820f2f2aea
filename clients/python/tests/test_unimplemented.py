"""Engine RPCs not built yet answer UNIMPLEMENTED with a message naming the
engine and a NOT_IMPLEMENTED ErrorInfo."""

import asyncio

import grpc
import pytest

from agentd.v1 import agent_pb2
from agentd_client import AsyncClient, Client, error_details


def assert_not_built(err: grpc.RpcError, engine: str, method: str) -> None:
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert engine in err.details()
    assert method in err.details()
    details = error_details(err)
    assert details is not None
    assert details.reason == "NOT_IMPLEMENTED"
    assert details.domain == "agentd.dev"
    assert details.metadata["engine"] == engine


def test_unary_rpcs_name_their_engine(server):
    with Client(server.target) as client:
        calls = [
            (lambda: client.agents.ListSwarms(agent_pb2.ListSwarmsRequest()),
             "agents engine", "agentd.v1.AgentService/ListSwarms"),
        ]
        for call, engine, method in calls:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert_not_built(err.value, engine, method)


def test_bidi_work_stream_names_its_engine(server):
    async def run():
        async with AsyncClient(server.target) as client:
            # No write before the status: the server rejects the call as soon
            # as it opens, and grpcio's aio client reports a write that races
            # with that early end as INTERNAL "Internal error from Core"
            # instead of the server's status.
            call = client.agents.Work()
            return await call.code(), await call.details()

    code, details = asyncio.run(run())
    assert code == grpc.StatusCode.UNIMPLEMENTED, details
    assert "agents engine" in details
    assert "agentd.v1.AgentService/Work" in details
