"""The peer of benches/query.rs: llama.cpp (llama-cpp-python, in-process, no
network, which favours the peer) running the same Gemma 3 270M Q4_K_M GGUF
on the same prompts, greedy, with the same thread count and token budget.

Measures time to first token (prompt evaluation plus the first sampled
token) and decode tokens/s after the first token, and prints JSON. Run by
scripts/bench-query.
"""

import json
import pathlib
import statistics
import sys
import time

import llama_cpp
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/gemma-3-270m/gemma-3-270m-Q4_K_M.gguf"
# benches/query.rs uses the same prompts and budget.
PROMPTS = [
    "Tell me a story about a lighthouse keeper.",
    "Explain how tides work.",
    "Write a short letter to a friend about autumn.",
    "Describe a busy market in the morning.",
    "What makes a good cup of tea?",
]
TOKENS = 128


def chat(user: str) -> str:
    return f"<bos><start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n"


def main() -> None:
    llm = Llama(model_path=str(MODEL), n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)
    ttft, rates = [], []
    warm = llm.tokenize(chat("warm up").encode(), add_bos=False, special=True)
    for _, _ in zip(llm.generate(warm, temp=0.0, top_k=1, reset=True), range(4)):
        pass
    for prompt in PROMPTS:
        tokens = llm.tokenize(chat(prompt).encode(), add_bos=False, special=True)
        started = time.perf_counter()
        first = None
        count = 0
        for token in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            now = time.perf_counter()
            if first is None:
                first = now
            if token in (llm.token_eos(), 106):  # <end_of_turn> ends the answer as in agentd
                break
            count += 1
            if count >= TOKENS:
                break
        done = time.perf_counter()
        ttft.append((first - started) * 1e3)
        rates.append((count - 1) / (done - first))
    print(json.dumps({
        "llama_cpp_python": llama_cpp.__version__,
        "ttft_p50_ms": statistics.median(ttft),
        "tokens_per_s": statistics.median(rates),
        "tokens": TOKENS,
    }))


if __name__ == "__main__":
    sys.exit(main())
