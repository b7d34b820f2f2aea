"""Makes tests/fixtures/gemma3_reference.json: what llama.cpp (through
llama-cpp-python, the benchmark peer) does with the Gemma 3 270M GGUF that
scripts/fetch-models installs, for agentd's own tokenizer and model to be
checked against.

- "tokenize": texts and their token ids (no BOS, special tokens not parsed),
  checking the tokenizer agentd rebuilds from GGUF metadata;
- "generate": chat prompts in Gemma's format and the first greedy tokens and
  text llama.cpp produces, checking the forward pass.

Run: $(scripts/bench-deps)/bin/python scripts/python/make_local_fixture.py
"""

import json
import pathlib
import sys

from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/gemma-3-270m/gemma-3-270m-Q4_K_M.gguf"
OUT = ROOT / "tests/fixtures/gemma3_reference.json"

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\nand more\n\n\n",
    "naïve café, Zürich, 東京, Ελληνικά, emoji 🙂🚀",
    "def add(a, b):\n    return a + b\n",
    "<start_of_turn> is not special in plain text",
    "1234567890 3.14159 -42 1e-9",
    "Ünïcödé and mixed CASE WORDS with punctuation?!...",
    "a" * 40,
]

PROMPTS = [
    ("", "Write one sentence about the sea."),
    ("You are terse.", "List three colours."),
    ("", "Count from one to ten."),
]

GENERATE_TOKENS = 24


def chat(system: str, user: str) -> str:
    content = f"{system}\n\n{user}" if system else user
    return f"<bos><start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n"


def main() -> None:
    llm = Llama(model_path=str(MODEL), n_ctx=2048, n_threads=2, verbose=False, logits_all=False)
    tokenize = [
        {"text": t, "ids": llm.tokenize(t.encode(), add_bos=False, special=False)} for t in TEXTS
    ]
    generate = []
    for system, user in PROMPTS:
        prompt = llm.tokenize(chat(system, user).encode(), add_bos=False, special=True)
        llm.reset()
        ids = []
        for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            if tok == llm.token_eos() or len(ids) >= GENERATE_TOKENS:
                break
            ids.append(tok)
        text = llm.detokenize(ids).decode("utf-8", errors="replace")
        generate.append({"system": system, "user": user, "prompt_ids": prompt, "ids": ids, "text": text})
    OUT.write_text(json.dumps({"model": MODEL.name, "tokenize": tokenize, "generate": generate}, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
