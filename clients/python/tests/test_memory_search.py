"""Vector collections from Python: create, upsert, search with a filter."""

from google.protobuf import struct_pb2

from agentd.v1 import memory_pb2
from agentd_client import Client


def test_upsert_and_search_with_a_filter(server):
    with Client(server.target) as client:
        client.memory.CreateCollection(
            memory_pb2.CreateCollectionRequest(name="py-docs", dimensions=3, metric=memory_pb2.METRIC_COSINE)
        )
        points = []
        for i, (vector, lang) in enumerate(
            [([1, 0, 0], "en"), ([0.9, 0.1, 0], "fr"), ([0, 1, 0], "en"), ([0, 0, 1], "en")]
        ):
            payload = struct_pb2.Struct()
            payload.update({"lang": lang})
            points.append(
                memory_pb2.PointInput(id=f"p{i}", vector=memory_pb2.Vector(values=vector), payload=payload)
            )
        upserted = client.memory.Upsert(memory_pb2.UpsertRequest(collection="py-docs", points=points))
        assert [r.status for r in upserted.results] == [memory_pb2.UPSERT_STATUS_CREATED] * 4

        query = memory_pb2.Vector(values=[1, 0.05, 0])
        nearest = client.memory.Search(memory_pb2.SearchRequest(collection="py-docs", vector=query, k=2))
        assert [r.id for r in nearest.results] == ["p0", "p1"]

        english = memory_pb2.Filter(
            field=memory_pb2.FieldCondition(key="lang", eq=struct_pb2.Value(string_value="en"))
        )
        filtered = client.memory.Search(
            memory_pb2.SearchRequest(collection="py-docs", vector=query, k=2, filter=english, with_payload=True)
        )
        assert [r.id for r in filtered.results] == ["p0", "p2"]
        assert all(r.payload["lang"] == "en" for r in filtered.results)


def test_upsert_stream_and_collection_stats(server):
    with Client(server.target) as client:
        client.memory.CreateCollection(
            memory_pb2.CreateCollectionRequest(name="py-bulk", dimensions=2, metric=memory_pb2.METRIC_L2)
        )

        def batches():
            for b in range(3):
                yield memory_pb2.UpsertStreamRequest(
                    collection="py-bulk" if b == 0 else "",
                    points=[
                        memory_pb2.PointInput(id=f"{b}-{i}", vector=memory_pb2.Vector(values=[b, i]))
                        for i in range(100)
                    ],
                )

        totals = client.memory.UpsertStream(batches())
        assert (totals.points_upserted, totals.batches_committed) == (300, 3)

        query = memory_pb2.SearchRequest(collection="py-bulk", vector=memory_pb2.Vector(values=[2, 7]), k=1)
        for _ in range(3):
            assert [r.id for r in client.memory.Search(query).results] == ["2-7"]
        stats = client.memory.CollectionStats(memory_pb2.CollectionStatsRequest(name="py-bulk"))
        assert stats.points_count == 300
        assert (stats.cache_hits, stats.cache_misses) == (2, 1)
        assert stats.last_applied_sequence == 3
        assert stats.index_memory_bytes > 0 and stats.disk_bytes > 0
