#!/usr/bin/env python3
"""Goldens from the reference implementation (HF transformers), run by hand, not in CI.

    python3 -m venv /tmp/venv-golden && . /tmp/venv-golden/bin/activate
    pip install torch==2.15.0 transformers==5.24.0 gguf==0.19.0 jinja2
    python3 tools/gen_goldens.py tokenization   # needs the default model in ~/.cache/finetp

`tokenization`: HF's tokenizer for the SmolLM2 GGUF (transformers reads the GGUF itself):
the ids of raw prompts (`tok(text)`, with whatever BOS/EOS the tokenizer adds) and of chat
conversations (`apply_chat_template(..., add_generation_prompt=True)`), written to
crates/finetp-loader/tests/data/smollm2_tokenization.json. finetp's tokenisation must equal
them (crates/finetp-loader/tests/tokenization.rs).
"""
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FINETP_CACHE", Path.home() / ".cache" / "finetp"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

RAW = [
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "  leading spaces, digits 12345 and symbols <|im_start|> inside text",
    "Ünïcödé, emoji 🙂 and\nnew lines\n\n",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Name a primary color."}],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Count to 3."},
    ],
]


def tokenization():
    from transformers import AutoTokenizer
    import transformers

    tok = AutoTokenizer.from_pretrained(str(CACHE), gguf_file=GGUF)
    out = {
        "generated_by": f"tools/gen_goldens.py tokenization (transformers {transformers.__version__})",
        "model": GGUF,
        "raw": [{"text": t, "ids": tok(t).input_ids} for t in RAW],
        "chat": [
            {"messages": m, "ids": list(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True)["input_ids"])}
            for m in CHATS
        ],
    }
    path = ROOT / "crates/finetp-loader/tests/data/smollm2_tokenization.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    what = sys.argv[1:] or ["tokenization"]
    for w in what:
        {"tokenization": tokenization}[w]()
