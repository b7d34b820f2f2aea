"""The Chroma peer of benches/memory/peer.rs: the same vectors, queries and
exact answers (files the Rust bench wrote), the same steps, on Chroma's
embedded PersistentClient and on its HTTP server (`chroma run`), each with
its default HNSW and cosine space. Prints JSON.

    python bench_chroma_peer.py <dir with data.f32, queries.f32, truth.i64> <dims> <k>

Steps per mode, as agentd's side does them: create the collection; add the
points in batches of 1,000 from one client (the acknowledged ingest rate);
the first query right after the last add (time from the first write to the
first answer); every query once from one client (p50/p99, recall@k against
the exact answers); with the server, the same queries from 16 concurrent
clients (threads, each with its own HttpClient).
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

BATCH = 1000
CLIENTS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_times, p):
    return sorted_times[min(len(sorted_times) - 1, int(len(sorted_times) * p))] * 1e3


def recall(truth, got):
    hits = sum(len(set(t) & set(g)) for t, g in zip(truth, got))
    return hits / sum(len(t) for t in truth)


def run(client_factory, data, queries, truth, k, concurrent):
    import chromadb  # noqa: F401

    client = client_factory()
    col = client.create_collection(
        "peer", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    n = len(data)
    ids = [str(i) for i in range(n)]
    started = time.perf_counter()
    for first in range(0, n, BATCH):
        col.add(ids=ids[first : first + BATCH], embeddings=data[first : first + BATCH])
    ingest = time.perf_counter() - started
    col.query(query_embeddings=queries[:1], n_results=k)
    first_answer = time.perf_counter() - started

    times, got = [], []
    for q in queries:
        t = time.perf_counter()
        r = col.query(query_embeddings=[q], n_results=k, include=[])
        times.append(time.perf_counter() - t)
        got.append([int(i) for i in r["ids"][0]])
    times.sort()
    out = {
        "ingest_points_per_s": n / ingest,
        "first_answer_s": first_answer,
        "p50_ms": percentile(times, 0.5),
        "p99_ms": percentile(times, 0.99),
        "qps_1": len(times) / sum(times),
        "recall": recall(truth, got),
        "configuration": col.configuration_json.get("hnsw"),
    }
    if concurrent:
        clients = [client_factory().get_collection("peer", embedding_function=None) for _ in range(CLIENTS)]
        all_times = [[] for _ in range(CLIENTS)]
        per = -(-len(queries) // CLIENTS)

        def work(i):
            c = clients[i]
            for q in queries[i * per : (i + 1) * per]:
                t = time.perf_counter()
                c.query(query_embeddings=[q], n_results=k, include=[])
                all_times[i].append(time.perf_counter() - t)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(CLIENTS)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        flat = sorted(x for ts in all_times for x in ts)
        out["qps_16"] = len(flat) / wall
        out["p50_16_ms"] = percentile(flat, 0.5)
        out["p99_16_ms"] = percentile(flat, 0.99)
    return out


def main() -> None:
    import chromadb

    folder, dims, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = np.fromfile(os.path.join(folder, "data.f32"), dtype="<f4").reshape(-1, dims)
    queries = np.fromfile(os.path.join(folder, "queries.f32"), dtype="<f4").reshape(-1, dims)
    truth = np.fromfile(os.path.join(folder, "truth.i64"), dtype="<i8").reshape(-1, k).tolist()
    result = {"chromadb": chromadb.__version__, "points": len(data), "queries": len(queries)}

    embedded_dir = tempfile.mkdtemp(prefix="chroma-embedded-")
    result["embedded"] = run(
        lambda: chromadb.PersistentClient(path=embedded_dir), data, queries, truth, k, False
    )

    server_dir = tempfile.mkdtemp(prefix="chroma-server-")
    port = free_port()
    chroma = os.path.join(os.path.dirname(sys.executable), "chroma")
    server = subprocess.Popen(
        [chroma, "run", "--path", server_dir, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        result["server"] = run(
            lambda: chromadb.HttpClient(host="127.0.0.1", port=port), data, queries, truth, k, True
        )
    finally:
        server.terminate()
        server.wait()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
