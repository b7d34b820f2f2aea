"""Key-value memory from Python: put, get, compare-and-set, list, delete."""

import asyncio

import grpc
import pytest

from agentd.v1 import memory_pb2
from agentd_client import AsyncClient, Client, error_details


def test_put_get_list_delete(server):
    with Client(server.target) as client:
        stored = client.memory.Put(
            memory_pb2.PutRequest(namespace="py", key="fact/1", value=b"the sky is blue",
                                  content_type="text/plain", metadata={"source": "pytest"})
        )
        assert stored.entry.version == 1
        got = client.memory.Get(memory_pb2.GetRequest(namespace="py", key="fact/1")).entry
        assert got.value == b"the sky is blue"
        assert dict(got.metadata) == {"source": "pytest"}
        client.memory.Put(memory_pb2.PutRequest(namespace="py", key="fact/2", value=b"water is wet"))
        listed = client.memory.List(memory_pb2.ListRequest(namespace="py", prefix="fact/"))
        assert [e.key for e in listed.entries] == ["fact/1", "fact/2"]
        assert listed.next_page_token == ""
        assert client.memory.Delete(memory_pb2.DeleteRequest(namespace="py", key="fact/1")).deleted
        with pytest.raises(grpc.RpcError) as err:
            client.memory.Get(memory_pb2.GetRequest(namespace="py", key="fact/1"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_compare_and_set_conflict_is_aborted(server):
    with Client(server.target) as client:
        client.memory.Put(memory_pb2.PutRequest(namespace="py", key="cas", value=b"1", if_version=0))
        with pytest.raises(grpc.RpcError) as err:
            client.memory.Put(memory_pb2.PutRequest(namespace="py", key="cas", value=b"2", if_version=0))
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert error_details(err.value).reason == "VERSION_CONFLICT"


def test_async_client_pages_through_a_namespace(server):
    async def run():
        async with AsyncClient(server.target) as client:
            for i in range(12):
                await client.memory.Put(memory_pb2.PutRequest(namespace="py-async", key=f"k{i:02}", value=b"v"))
            keys, token = [], ""
            while True:
                page = await client.memory.List(
                    memory_pb2.ListRequest(namespace="py-async", page_size=5, page_token=token)
                )
                keys += [e.key for e in page.entries]
                token = page.next_page_token
                if not token:
                    return keys

    assert asyncio.run(run()) == [f"k{i:02}" for i in range(12)]
