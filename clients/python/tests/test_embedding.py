"""EmbeddingService from Python, against all-MiniLM-L6-v2."""

import asyncio
import math

import grpc
import pytest

from agentd.v1 import embedding_pb2
from agentd_client import AsyncClient, Client, error_details


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embed_returns_normalised_minilm_vectors(server):
    with Client(server.target) as client:
        answer = client.embedding.Embed(
            embedding_pb2.EmbedRequest(
                inputs=["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
            )
        )
    assert answer.model == "all-MiniLM-L6-v2"
    vectors = [list(e.values) for e in answer.embeddings]
    assert all(len(v) == 384 for v in vectors)
    assert abs(math.sqrt(sum(x * x for x in vectors[0])) - 1.0) < 1e-4
    assert cosine(vectors[0], vectors[1]) > 0.6
    assert cosine(vectors[0], vectors[2]) < 0.3
    assert answer.usage.input_tokens == sum(e.tokens for e in answer.embeddings)


def test_invalid_input_names_the_field(server):
    with Client(server.target) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.embedding.Embed(embedding_pb2.EmbedRequest(inputs=["ok", ""]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error_details(err.value)
    assert details.reason == "INVALID_FIELD"
    assert details.field_violations == [("inputs[1]", "must not be empty")]


def test_embed_stream_from_an_async_iterator(server):
    async def run():
        async def requests():
            for i in range(10):
                yield embedding_pb2.EmbedStreamRequest(
                    request_id=f"r{i}", request=embedding_pb2.EmbedRequest(inputs=[f"text {i}"])
                )

        async with AsyncClient(server.target) as client:
            return [r async for r in client.embedding.EmbedStream(requests())]

    responses = asyncio.run(run())
    assert sorted(r.request_id for r in responses) == sorted(f"r{i}" for i in range(10))
    assert all(len(r.response.embeddings[0].values) == 384 for r in responses)
