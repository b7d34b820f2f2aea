import asyncio

import grpc
import pytest

from agentd_client import SERVICES, AsyncClient, Client


def test_whole_server_and_each_built_service_are_serving(server):
    with Client(server.target) as client:
        assert client.health() == "SERVING"
        for service in SERVICES:
            assert client.health(service) == "SERVING", service


def test_unknown_service_is_not_found(server):
    with Client(server.target) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.health("agentd.v1.NoSuchService")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_async_client_reports_health(server):
    async def check():
        async with AsyncClient(server.target) as client:
            return [await client.health(s) for s in ("",) + SERVICES]

    assert asyncio.run(check()) == ["SERVING"] * (1 + len(SERVICES))


def test_api_key_and_compression_options_do_not_break_calls(server):
    with Client(server.target, api_key="secret", compression=grpc.Compression.Gzip) as client:
        assert client.health() == "SERVING"

    async def check():
        async with AsyncClient(server.target, api_key="secret") as client:
            return await client.health()

    assert asyncio.run(check()) == "SERVING"
