#!/usr/bin/env python3
"""Goldens from the reference implementation (HF transformers), run by hand, not in CI.

    python3 -m venv /tmp/venv-golden && . /tmp/venv-golden/bin/activate
    pip install torch==2.15.0 transformers==5.24.0 gguf==0.19.0 jinja2
    python3 tools/gen_goldens.py tokenization   # needs the default model in ~/.cache/finetp
    python3 tools/gen_goldens.py logits [NAME ...]   # every family, or only those named
    python3 tools/gen_goldens.py quants   # GGUF blocks by the gguf package's own quantisers
    python3 tools/gen_goldens.py decoded   # Q5_0/Q5_1/Q4_K/Q5_K/Q6_K as the gguf package decodes them

`tokenization`: HF's tokenizer for the SmolLM2 GGUF (transformers reads the GGUF itself):
the ids of raw prompts (`tok(text)`, with whatever BOS/EOS the tokenizer adds) and of chat
conversations (`apply_chat_template(..., add_generation_prompt=True)`), written to
crates/finetp-loader/tests/data/smollm2_tokenization.json. finetp's tokenisation must equal
them (crates/finetp-loader/tests/tokenization.rs).

`logits`: small random checkpoints of each family, written by HF itself (`save_pretrained`)
under crates/finetp-cli/tests/data/hf/<name>/ with `golden.json`: a prompt of random ids, HF's
greedy continuation, and HF's logits for the prompt's last position and for every decode step
(teacher-forced: each step feeds HF's own previous greedy token). Families: Llama with `llama3`
RoPE scaling, Mistral with a 4-token sliding window, Qwen2 (q/k/v bias, tied embeddings; f32 and
a bf16 copy, whose logits HF computes in f32 from the bf16 weights), Qwen3 (q/k norm) and
DeepSeek-V3 (MLA with `yarn` RoPE, one dense and one MoE layer with group-limited routing),
DeepSeek-V2 (softmax scoring, group-limited greedy routing, plain q projection, V2's yarn mscale)
a dense DeepSeek-V3 with NeoX-style RoPE (`rope_interleave: false`) and tied embeddings, and an
FP8 copy of a DeepSeek-V3 stored as its release is (e4m3 linear weights, one f32
`weight_scale_inv` per 128x128 block, `quantization_config`), whose logits HF computes through
its own FP8 loader (which dequantises on a CPU) and checks against a hand dequantisation. The
weights are drawn with a wide init so top-1 margins sit far above float noise; the script
prints each family's smallest top-1/top-2 gap. finetp's f32 path must match them
(crates/finetp-cli/tests/hf_goldens.rs).

`gguf_qwen2 LLAMA_CPP_DIR`: the `qwen2_tied` checkpoint converted to an f32 GGUF by llama.cpp's
own `convert_hf_to_gguf.py` (LLAMA_CPP_DIR: `vendor/llama.cpp` of the llama-cpp-python 0.3.36
source package from PyPI, `llama_cpp_python-0.3.36.tar.gz`; it also needs `pip install
sentencepiece numpy`), with a SentencePiece BPE `tokenizer.model` trained here (the converter's
first choice for Qwen2), written to crates/finetp-cli/tests/data/hf/qwen2_tied_gguf/ with
SentencePiece's own ids for a few raw prompts. finetp must give `qwen2_tied`'s HF logits from it,
and SentencePiece's ids from the vocabulary the converter wrote (crates/finetp-cli/tests/hf_goldens.rs).

`rope`: HF's inverse frequencies and attention factor (`ROPE_INIT_FUNCTIONS`) for each scaling
scheme finetp reads, with the parameters real checkpoints use, written to
crates/finetp-core/tests/data/hf_rope.json (crates/finetp-core/tests/rope_scaling.rs).

`smollm2`: HF transformers loads the default model's GGUF itself (dequantised to f32, as
finetp's f32 path holds it) and greedily continues each raw prompt of `tokenization` for 32
tokens; per step it keeps its top 8 token ids and logits and its largest |logit| (the whole
vocabulary is too large to commit), written to crates/finetp-cli/tests/data/smollm2_hf_greedy.json
(crates/finetp-cli/tests/smollm2.rs, teacher-forced).
"""
import importlib.metadata
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


COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6)
PROMPT_LEN, STEPS = 9, 6


def families():
    """(name, config class, config kwargs, dtype) of each golden checkpoint."""
    from transformers import DeepseekV2Config, DeepseekV3Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    theta = 10000.0
    return [
        ("llama3_rope", LlamaConfig, dict(COMMON, tie_word_embeddings=False, rope_parameters=dict(
            rope_type="llama3", rope_theta=theta, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16)), "float32"),
        ("mistral_window", MistralConfig, dict(COMMON, head_dim=16, sliding_window=4, tie_word_embeddings=False,
                                               rope_parameters=dict(rope_type="default", rope_theta=theta)), "float32"),
        ("qwen2_tied", Qwen2Config, dict(COMMON, tie_word_embeddings=True, use_sliding_window=False,
                                         rope_parameters=dict(rope_type="default", rope_theta=theta)), "float32"),
        ("qwen2_tied_bf16", Qwen2Config, dict(COMMON, tie_word_embeddings=True, use_sliding_window=False,
                                              rope_parameters=dict(rope_type="default", rope_theta=theta)), "bfloat16"),
        ("qwen3_qk_norm", Qwen3Config, dict(COMMON, head_dim=16, tie_word_embeddings=False,
                                            rope_parameters=dict(rope_type="default", rope_theta=theta)), "float32"),
        ("deepseek_v3_yarn", DeepseekV3Config, dict(
            COMMON, num_key_value_heads=4, moe_intermediate_size=32, first_k_dense_replace=1, n_routed_experts=8,
            n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1, routed_scaling_factor=2.5,
            norm_topk_prob=True, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, tie_word_embeddings=False, rope_parameters=dict(
                rope_type="yarn", rope_theta=theta, factor=4.0, original_max_position_embeddings=16,
                beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0)), "float32"),
        ("deepseek_v2_softmax", DeepseekV2Config, dict(
            COMMON, num_key_value_heads=4, moe_intermediate_size=32, first_k_dense_replace=1, n_routed_experts=8,
            n_shared_experts=2, num_experts_per_tok=2, n_group=4, topk_group=2, topk_method="group_limited_greedy",
            routed_scaling_factor=1.5, q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, tie_word_embeddings=False, rope_parameters=dict(
                rope_type="yarn", rope_theta=theta, factor=4.0, original_max_position_embeddings=16,
                mscale=0.707, mscale_all_dim=0.707)), "float32"),
        ("deepseek_v3_dense_neox_rope", DeepseekV3Config, dict(
            COMMON, num_hidden_layers=2, first_k_dense_replace=2, n_routed_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=32, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, num_key_value_heads=4, rope_interleave=False, tie_word_embeddings=True,
            rope_parameters=dict(rope_type="default", rope_theta=theta)), "float32"),
        # Every dimension a multiple of the 128x128 FP8 block or under one block: HF's CPU
        # dequantisation derives the block from the scale grid, which is only right then.
        ("deepseek_v3_fp8_block", DeepseekV3Config, dict(
            COMMON, hidden_size=256, intermediate_size=256, num_attention_heads=2, num_key_value_heads=2,
            moe_intermediate_size=128, first_k_dense_replace=1, n_routed_experts=4, n_shared_experts=1,
            num_experts_per_tok=2, n_group=2, topk_group=1, routed_scaling_factor=2.5, norm_topk_prob=True,
            q_lora_rank=128, kv_lora_rank=96, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
            tie_word_embeddings=False, rope_parameters=dict(
                rope_type="yarn", rope_theta=theta, factor=4.0, original_max_position_embeddings=16,
                beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0)), "fp8_block"),
    ]


FP8_BLOCK = 128
FP8_LINEARS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_fp8_blocks(d):
    """Rewrites the checkpoint in `d` as DeepSeek-V3's FP8 release is stored: every linear weight
    of attention and the MLPs in float8_e4m3fn with one f32 `weight_scale_inv` per 128x128 block
    (scale = block amax / 448; the weight is q * scale), the embeddings, norms and router in f32,
    and `quantization_config` in config.json as that release writes it."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    out = {}
    for name, w in state.items():
        if w.dim() != 2 or not any(name.endswith(f"{m}.weight") for m in FP8_LINEARS):
            out[name] = w
            continue
        rows, cols = w.shape
        sr, sc = -(-rows // FP8_BLOCK), -(-cols // FP8_BLOCK)
        scale = torch.empty(sr, sc, dtype=torch.float32)
        q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
        for i in range(sr):
            for j in range(sc):
                blk = w[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK].float()
                s = blk.abs().max().clamp(min=1e-12) / 448.0
                scale[i, j] = s
                q[i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK] = (blk / s).to(torch.float8_e4m3fn)
        out[name] = q
        out[name + "_scale_inv"] = scale
    save_file(out, d / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                  "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def dequantized_reference(d, fp8_state):
    """The FP8 checkpoint's weights dequantised by hand into an f32 model: HF's own FP8 loader
    must give the same logits, or the golden is not written."""
    import tempfile

    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(d)
    del cfg.quantization_config
    state = {}
    for name, w in fp8_state.items():
        if name.endswith("_scale_inv"):
            continue
        if w.dtype == torch.float8_e4m3fn:
            s = fp8_state[name + "_scale_inv"]
            s = s.repeat_interleave(FP8_BLOCK, 0)[: w.shape[0]].repeat_interleave(FP8_BLOCK, 1)[:, : w.shape[1]]
            w = w.float() * s
        state[name] = w
    # HF keeps the per-expert checkpoint names on disk and fuses them in memory: load through
    # save/from_pretrained so its own renaming applies.
    with tempfile.TemporaryDirectory() as t:
        cfg.save_pretrained(t)
        save_file(state, f"{t}/model.safetensors", metadata={"format": "pt"})
        return AutoModelForCausalLM.from_pretrained(t, dtype=torch.float32).eval()


def logits(only=()):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    out_root = ROOT / "crates/finetp-cli/tests/data/hf"
    for i, (name, cls, kw, dtype) in enumerate(families()):
        torch.manual_seed(1000 + i)
        cfg = cls(**kw)
        cfg._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        with torch.no_grad():
            # A wide init (std 0.2 for matrices, norms around 1) so logits have clear margins.
            for pname, p in model.named_parameters():
                if p.dim() == 1 and "norm" in pname:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif p.dim() == 1:
                    p.copy_(0.2 * torch.randn_like(p))
                else:
                    p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5 * 1.5)
            for mname, buf in model.named_buffers():
                if mname.endswith("e_score_correction_bias"):
                    buf.copy_(0.1 * torch.randn_like(buf))
        if dtype == "bfloat16":
            model = model.to(torch.bfloat16)
        d = out_root / name
        if only and name not in only:
            continue
        d.mkdir(parents=True, exist_ok=True)
        for f in d.glob("*"):
            f.unlink()
        model.save_pretrained(d)
        fp8_state = quantize_fp8_blocks(d) if dtype == "fp8_block" else None
        # The reference: f32 arithmetic on the weights as stored (an FP8 checkpoint dequantised
        # by HF's FP8 loader, which does so on a machine without an FP8 GPU).
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        ref.config._attn_implementation = "eager"
        check = dequantized_reference(d, fp8_state) if fp8_state else None
        g = torch.Generator().manual_seed(77 + i)
        prompt = torch.randint(0, cfg.vocab_size, (PROMPT_LEN,), generator=g).tolist()
        steps, tokens = [], []
        with torch.no_grad():
            out = ref(torch.tensor([prompt]), use_cache=True)
            past, last = out.past_key_values, out.logits[0, -1]
            steps.append(last.tolist())
            for _ in range(STEPS):
                tok = int(last.argmax())
                tokens.append(tok)
                out = ref(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
                past, last = out.past_key_values, out.logits[0, -1]
                steps.append(last.tolist())
            if check is not None:
                check.config._attn_implementation = "eager"
                want = check(torch.tensor([prompt + tokens])).logits[0, PROMPT_LEN - 1:]
                diff = (want - torch.tensor(steps)).abs().max() / want.abs().max()
                assert diff < 1e-5, f"{name}: HF's FP8 loader and the hand dequantisation differ by {diff:.1e}"
                print(f"{name}: HF's FP8 loader = hand dequantisation within {diff:.1e} of max |logit|")
        gaps = [float(torch.tensor(s).topk(2).values.diff().abs()) for s in steps]
        scale = max(max(abs(x) for x in s) for s in steps)
        golden = {
            "generated_by": f"tools/gen_goldens.py logits (torch {torch.__version__}, transformers {transformers.__version__})",
            "family": name,
            "stored_dtype": dtype,
            "prompt": prompt,
            "greedy": tokens,
            "logits": steps,
        }
        (d / "golden.json").write_text(json.dumps(golden) + "\n")
        size = sum(f.stat().st_size for f in d.glob("*"))
        print(f"{name}: {size / 1024:.0f} KiB, max |logit| {scale:.2f}, smallest top-1 gap {min(gaps):.4f} ({min(gaps) / scale:.1e} of max)")


def smollm2():
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(CACHE), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(CACHE), gguf_file=GGUF, dtype=torch.float32).eval()
    runs = []
    for text in RAW:
        ids = tok(text).input_ids
        steps, greedy = [], []
        with torch.no_grad():
            out = model(torch.tensor([ids]), use_cache=True)
            for _ in range(32):
                last = out.logits[0, -1]
                top = last.topk(8)
                steps.append({"ids": top.indices.tolist(), "logits": top.values.tolist(), "max_abs": float(last.abs().max())})
                t = int(top.indices[0])
                greedy.append(t)
                out = model(torch.tensor([[t]]), past_key_values=out.past_key_values, use_cache=True)
        runs.append({"text": text, "prompt": ids, "greedy": greedy, "steps": steps})
        print(repr(text[:30]), "->", repr(tok.decode(greedy)[:60]))
    out = {"generated_by": f"tools/gen_goldens.py smollm2 (torch {torch.__version__}, transformers {transformers.__version__})",
           "model": GGUF, "runs": runs}
    path = ROOT / "crates/finetp-cli/tests/data/smollm2_hf_greedy.json"
    path.write_text(json.dumps(out) + "\n")
    print(f"wrote {path}")


SPM_CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "What is the capital of France?", "Paris is the capital of France.",
    "Write one sentence about the ocean.", "The ocean is deep and blue, and the sea is wide.", "Hello world, hello there!",
]
SPM_PROMPTS = ["What is the capital of France?", "the sea is blue", "  two leading spaces and  a double one",
               "Hello, and chars the pieces lack: Q!? QZ"]


def gguf_qwen2(llama_cpp):
    """The qwen2_tied golden checkpoint converted by llama.cpp's own converter (f32)."""
    import shutil
    import subprocess
    import tempfile
    import sentencepiece as spm

    src, out_dir = ROOT / "crates/finetp-cli/tests/data/hf/qwen2_tied", ROOT / "crates/finetp-cli/tests/data/hf/qwen2_tied_gguf"
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(tmp)
        shutil.copy(src / "model.safetensors", ck / "model.safetensors")
        # The special ids the vocabulary below has (the golden's config leaves them null).
        cfg = json.loads((src / "config.json").read_text())
        (ck / "config.json").write_text(json.dumps(dict(cfg, bos_token_id=1, eos_token_id=2)))
        # A SentencePiece BPE vocabulary (the converter's first choice for Qwen2, and the
        # Llama 2 / Mistral kind) smaller than the model's 128 rows: the converter pads it.
        model = ck / "tokenizer.model"
        with open(model, "wb") as w:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(SPM_CORPUS * 20), model_writer=w, vocab_size=96,
                                           model_type="bpe", character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
                                           pad_id=-1, minloglevel=2,
                                           # Llama's normalizer spec, which the GGUF format assumes.
                                           normalization_rule_name="identity", remove_extra_whitespaces=False)
        (ck / "tokenizer_config.json").write_text(json.dumps(
            {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
        out_dir.mkdir(exist_ok=True)
        gguf_path = out_dir / "model.gguf"
        subprocess.run([sys.executable, str(Path(llama_cpp) / "convert_hf_to_gguf.py"), str(ck), "--outtype", "f32",
                        "--outfile", str(gguf_path)], check=True)
        sp = spm.SentencePieceProcessor(model_file=str(model))
        raw = [{"text": t, "ids": [sp.bos_id()] + sp.encode(t)} for t in SPM_PROMPTS]
    out = {"generated_by": f"tools/gen_goldens.py gguf_qwen2 (llama.cpp's convert_hf_to_gguf.py from {llama_cpp}, "
                           f"sentencepiece {spm.__version__})",
           "golden": "qwen2_tied", "raw": raw}
    (out_dir / "tokenization.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {gguf_path} ({gguf_path.stat().st_size / 1024:.0f} KiB)")
    for r in raw:
        print(repr(r["text"]), r["ids"])


ROPE_CASES = [
    # (name, head_dim, max_position_embeddings, rope_parameters)
    ("default", 64, 2048, dict(rope_type="default", rope_theta=10000.0)),
    ("linear", 64, 8192, dict(rope_type="linear", rope_theta=10000.0, factor=4.0)),
    ("dynamic", 64, 4096, dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0)),
    ("llama3_llama_3_1", 128, 131072, dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=8192)),
    ("yarn_qwen2_5", 128, 131072, dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0,
                                       original_max_position_embeddings=32768)),
    ("yarn_deepseek_v3", 64, 163840, dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, beta_fast=32, beta_slow=1,
                                          mscale=1.0, mscale_all_dim=1.0, original_max_position_embeddings=4096)),
    ("yarn_mscale_ratio", 64, 163840, dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, mscale=0.707,
                                           mscale_all_dim=1.0, original_max_position_embeddings=4096, truncate=False)),
    ("yarn_attention_factor", 64, 65536, dict(rope_type="yarn", rope_theta=10000.0, factor=16.0, beta_fast=16,
                                              beta_slow=2, original_max_position_embeddings=4096, attention_factor=1.25)),
]


def rope():
    import torch
    import transformers
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cases = []
    for name, hd, max_pos, params in ROPE_CASES:
        cfg = LlamaConfig(hidden_size=hd * 4, num_attention_heads=4, head_dim=hd, max_position_embeddings=max_pos,
                          rope_parameters=dict(params))
        kind = params["rope_type"]
        if kind == "default":
            inv = 1.0 / (params["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
            attention = 1.0
        else:
            inv, attention = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu")
        cases.append({"name": name, "head_dim": hd, "max_position_embeddings": max_pos, "rope_parameters": params,
                      "inv_freq": inv.tolist(), "attention_factor": float(attention)})
    out = {"generated_by": f"tools/gen_goldens.py rope (torch {torch.__version__}, transformers {transformers.__version__})",
           "cases": cases}
    path = ROOT / "crates/finetp-core/tests/data/hf_rope.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


def quants():
    """Blocks made and decoded by the `gguf` package's own `gguf.quants` (llama.cpp's reference
    quantisers ported to numpy), for finetp's block decoder to equal bit for bit
    (crates/finetp-core/tests/gguf_quants.rs): per format, [4, 128] values of mixed scales
    (one block all zeros, one with a single large outlier) quantised, and their dequantisation."""
    import numpy as np
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    rng = np.random.default_rng(13)
    x = (rng.standard_normal((4, 128)) * np.array([0.01, 1.0, 30.0, 0.3])[:, None]).astype(np.float32)
    x[0, :32] = 0.0
    x[3, 40] = 250.0
    out = {}
    for name, ty in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1)]:
        blocks = quants.quantize(x, ty)
        values = quants.dequantize(blocks, ty).astype(np.float32)
        out[name] = {"shape": list(x.shape), "bytes": blocks.tobytes().hex(), "values": [float(v) for v in values.ravel()]}
    path = ROOT / "crates/finetp-core/tests/data/gguf_quants.json"
    path.write_text(json.dumps({"generator": f"gguf {importlib.metadata.version('gguf')} gguf.quants", "formats": out}) + "\n")
    print(f"wrote {path}")


def decoded():
    """The GGUF formats finetp's loader decodes to f32 (crates/finetp-loader/tests/gguf_decoded.rs):
    `Q5_0` and `Q5_1` blocks made by `gguf.quants`' own quantisers from [4, 256] values of mixed
    scales, and `Q4_K`, `Q5_K`, `Q6_K` super-blocks of random bytes with finite f16 scales (the
    package has no k-quant quantiser), each with the values `gguf.quants.dequantize` gives."""
    import numpy as np
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    rng = np.random.default_rng(29)
    x = (rng.standard_normal((4, 256)) * np.array([0.01, 1.0, 30.0, 0.3])[:, None]).astype(np.float32)
    x[0, :32] = 0.0
    x[3, 40] = 250.0
    out = {}
    for name, ty in [("q5_0", T.Q5_0), ("q5_1", T.Q5_1)]:
        blocks = quants.quantize(x, ty)
        out[name] = {"shape": list(x.shape), "bytes": blocks.tobytes().hex(),
                     "values": [float(v) for v in quants.dequantize(blocks, ty).astype(np.float32).ravel()]}
    # Byte offsets of each k-quant's f16 scales, set to finite values of a few magnitudes.
    for name, ty, size, halves in [("q4_k", T.Q4_K, 144, [0, 2]), ("q5_k", T.Q5_K, 176, [0, 2]), ("q6_k", T.Q6_K, 210, [208])]:
        blocks = rng.integers(0, 256, size=(6, size), dtype=np.uint8)
        for b in range(blocks.shape[0]):
            for at in halves:
                blocks[b, at:at + 2] = np.frombuffer(np.float16(rng.choice([1e-3, 0.02, 0.5]) * rng.uniform(0.5, 2)).tobytes(), np.uint8)
        values = quants.dequantize(blocks.reshape(1, -1), ty).astype(np.float32)
        out[name] = {"shape": [1, 6 * 256], "bytes": blocks.tobytes().hex(), "values": [float(v) for v in values.ravel()]}
    path = ROOT / "crates/finetp-loader/tests/data/gguf_decoded.json"
    path.write_text(json.dumps({"generator": f"gguf {importlib.metadata.version('gguf')} gguf.quants", "formats": out}) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    what, *names = sys.argv[1:] or ["tokenization"]
    if what == "logits":
        logits(names)  # all families, or only those named
    elif what == "gguf_qwen2":
        gguf_qwen2(*names)  # the llama.cpp tree: vendor/llama.cpp of the llama-cpp-python sdist
    else:
        {"tokenization": tokenization, "rope": rope, "smollm2": smollm2, "quants": quants, "decoded": decoded}[what]()
