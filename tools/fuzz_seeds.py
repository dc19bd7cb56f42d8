#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (crates/finetp-fuzz), written by independent tools, run by
hand, not in CI:

    python3 -m venv /tmp/venv-seeds && /tmp/venv-seeds/bin/pip install gguf==0.19.0 safetensors numpy
    /tmp/venv-seeds/bin/python tools/fuzz_seeds.py

Each target's corpus is crates/finetp-fuzz/tests/__fuzz__/<target>/corpus/ (bolero's layout:
`cargo test -p finetp-fuzz` replays every file there, and `cargo bolero test` grows it):

- `gguf`: tiny one-layer GGUF models written by the `gguf` package's own GGUFWriter
  (llama.cpp's writer), with a byte-level BPE vocabulary, Q8_0 / Q4_1 blocks quantised by
  `gguf.quants` and f32 norms, for the llama and qwen2 architectures. `tiny-llama.gguf` is also
  the battery's GGUF (crates/finetp-cli/tests/battery.rs runs it through `finetp run`).
- `safetensors`: `model.safetensors` files written by the `safetensors` package for the
  fixed tiny config the target puts beside them (finetp_fuzz::SAFETENSORS_CONFIG), in f32 and
  bf16.
- `config_json`: every config.json the repository already holds (real releases'
  shapes and the HF-written golden checkpoints).
- `additional_config`: two layout bytes (DP, TP) and an `--additional-config` JSON.
"""

import json
import pathlib
import shutil

import gguf
import numpy as np
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUZZ = ROOT / "crates" / "finetp-fuzz" / "tests" / "__fuzz__"
RNG = np.random.default_rng(7)


def corpus(target):
    d = FUZZ / f"{target}" / "corpus"
    d.mkdir(parents=True, exist_ok=True)
    return d


def byte_vocab():
    """GPT-2's byte-to-unicode map: 256 single-character tokens, then a few merges."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    tokens = [chr(c) for c in cs]
    merges = ["t h", "th e", "Ġ t", "Ġ the"]
    tokens += ["th", "the", "Ġt", "Ġthe", "<|endoftext|>"]
    return tokens, merges


def tiny_gguf(path, arch):
    hidden, ff, heads, kv = 32, 64, 2, 1
    hd = hidden // heads
    tokens, merges = byte_vocab()
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL]
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_add_bos_token(False)

    def q(name, shape, qtype):
        a = RNG.uniform(-0.3, 0.3, size=shape).astype(np.float32)
        w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    def norm(name):
        w.add_tensor(name, (1.0 + RNG.uniform(-0.1, 0.1, size=(hidden,))).astype(np.float32))

    Q8, Q41 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_1
    q("token_embd.weight", (len(tokens), hidden), Q8)
    norm("blk.0.attn_norm.weight")
    q("blk.0.attn_q.weight", (heads * hd, hidden), Q8)
    q("blk.0.attn_k.weight", (kv * hd, hidden), Q8)
    q("blk.0.attn_v.weight", (kv * hd, hidden), Q8)
    if arch == "qwen2":
        for n, rows in [("q", heads * hd), ("k", kv * hd), ("v", kv * hd)]:
            w.add_tensor(f"blk.0.attn_{n}.bias", RNG.uniform(-0.1, 0.1, size=(rows,)).astype(np.float32))
    q("blk.0.attn_output.weight", (hidden, heads * hd), Q8)
    norm("blk.0.ffn_norm.weight")
    q("blk.0.ffn_gate.weight", (ff, hidden), Q41)
    q("blk.0.ffn_up.weight", (ff, hidden), Q41)
    q("blk.0.ffn_down.weight", (hidden, ff), Q41)
    norm("output_norm.weight")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# The tiny config finetp_fuzz::SAFETENSORS_CONFIG names (keep the two equal).
ST = dict(vocab=8, hidden=8, inter=8, layers=1, heads=2, kv=1)


def tiny_safetensors(path, dtype):
    h, v, i, hd = ST["hidden"], ST["vocab"], ST["inter"], ST["hidden"] // ST["heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for l in range(ST["layers"]):
        p = f"model.layers.{l}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (ST["heads"] * hd, h),
            p + "self_attn.k_proj.weight": (ST["kv"] * hd, h),
            p + "self_attn.v_proj.weight": (ST["kv"] * hd, h),
            p + "self_attn.o_proj.weight": (h, ST["heads"] * hd),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        }
    tensors = {k: RNG.uniform(-0.3, 0.3, size=s).astype(np.float32) for k, s in shapes.items()}
    if dtype == "bf16":
        # numpy has no bf16: store the top halves of the f32 bits as safetensors' BF16 would.
        import safetensors
        raw = {k: (a.view(np.uint32) >> 16).astype(np.uint16) for k, a in tensors.items()}
        header = {}
        off = 0
        blobs = []
        for k, a in raw.items():
            b = a.tobytes()
            header[k] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
            blobs.append(b)
            off += len(b)
        hj = json.dumps(header).encode()
        hj += b" " * (-len(hj) % 8)
        path.write_bytes(len(hj).to_bytes(8, "little") + hj + b"".join(blobs))
        safetensors.safe_open(str(path), "numpy")  # the package must read back what was written
    else:
        save_file(tensors, str(path))


def main():
    for target in ["gguf", "safetensors", "config_json", "additional_config"]:
        shutil.rmtree(FUZZ / f"{target}" / "corpus", ignore_errors=True)
    g = corpus("gguf")
    tiny_gguf(g / "tiny-llama.gguf", "llama")
    tiny_gguf(g / "tiny-qwen2.gguf", "qwen2")
    s = corpus("safetensors")
    tiny_safetensors(s / "tiny-f32.safetensors", "f32")
    tiny_safetensors(s / "tiny-bf16.safetensors", "bf16")
    c = corpus("config_json")
    configs = [ROOT / "crates/finetp-core/tests/data/deepseek-r1.config.json"]
    configs += sorted((ROOT / "crates/finetp-cli/tests/data/hf").glob("*/config.json"))
    for p in configs:
        name = p.parent.name if p.name == "config.json" else p.stem
        shutil.copy(p, c / f"{name}.json")
    a = corpus("additional_config")
    layouts = [
        (4, 1, {"finegrained_tp_config": {"embedding_tensor_parallel_size": 4, "lmhead_tensor_parallel_size": 4, "oproj_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 2}}),
        (32, 1, {"finegrained_tp_config": {"embedding_tensor_parallel_size": 8, "lmhead_tensor_parallel_size": 8, "oproj_tensor_parallel_size": 8, "mlp_tensor_parallel_size": 8}}),
        (2, 2, {"finegrained_tp_config": {"mlp_tensor_parallel_size": 2}, "other_key": [1, 2]}),
        (8, 1, {"finegrained_tp_config": {"oproj_tensor_parallel_size": 3}}),
    ]
    for n, (dp, tp, cfg) in enumerate(layouts):
        (a / f"layout-{n}").write_bytes(bytes([dp, tp]) + json.dumps(cfg).encode())


if __name__ == "__main__":
    main()
