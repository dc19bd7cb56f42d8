"""finetp against llama.cpp (llama-cpp-python) on one GGUF, alternating in one run.

Both decode greedily from the same token ids for the same number of tokens on the same
number of threads. llama.cpp is timed by its own counters (llama_perf_context: eval time
and count) and by wall clock around its decode loop; finetp by its per-step decode times
(`finetp run --json`, which excludes process start and load). Prints every round, the medians
and the ratio (finetp tokens/s over llama.cpp's). With --prefill-tokens N, also the prefill of
a prompt of about N tokens: llama.cpp by its prompt-eval counters (no logits but the last
row's) and wall clock, finetp by its time to first token. Run by bench/vs_llama_cpp.sh.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import llama_cpp

DEFAULT_MODEL = os.path.expanduser("~/.cache/finetp/SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT = ("The history of the printing press begins in the fifteenth century, when movable type "
        "changed how books were made, who could read them and how ideas travelled. ")


def llama_round(llm, ids, tokens):
    """One llama.cpp generation: prefill `ids`, then `tokens` greedy decode steps."""
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    out = []
    for _ in range(tokens):
        tok = int(llm.scores[llm.n_tokens - 1].argmax())
        out.append(tok)
        llm.eval([tok])
    t2 = time.perf_counter()
    p = llama_cpp.llama_perf_context(llm.ctx)
    return {
        "prefill_tok_s": len(ids) / (t1 - t0),
        "decode_ms_counter": p.t_eval_ms / max(p.n_eval, 1),
        "decode_ms_wall": (t2 - t1) * 1e3 / tokens,
        "n_eval": p.n_eval,
        "tokens": out,
    }


def finetp_round(exe, model, prompt, tokens, parallel):
    cmd = [exe, "run", "--model", model, "--raw-prompt", "-p", prompt, "--max-tokens", str(tokens + 1),
           "--ignore-eos", "--json", *parallel]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"finetp failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    rep = json.loads(r.stdout)
    steps = [s for rk in rep["ranks"] for s in rk["decode_step_s"]]
    return {
        "decode_ms": 1e3 * sum(steps) / max(len(steps), 1),
        "ttft_s": rep["outputs"][0]["ttft_s"],
        "tokens": rep["outputs"][0]["tokens"],
    }


def medians(rows, title, digits):
    """Prints and returns each row's median over the rounds."""
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(title)
    for k, v in med.items():
        print(f"  {k:24} {v:8.{digits}f}")
    return med


def llama_prefill(llm, ids):
    """llama.cpp's prefill of `ids` (its own micro-batches), by its counters and wall clock."""
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    t0 = time.perf_counter()
    llm.eval(ids)
    # Decoding is asynchronous: the counters are booked, and the work done, at the sync.
    llama_cpp.llama_synchronize(llm.ctx)
    wall = time.perf_counter() - t0
    p = llama_cpp.llama_perf_context(llm.ctx)
    return {"counter": p.n_p_eval / (p.t_p_eval_ms / 1e3), "wall": len(ids) / wall, "n": p.n_p_eval}


def finetp_prefill(exe, model, prompt, n_ids, extra):
    """finetp's prefill: the time to its first token (prefill plus one sampling), from the run's
    own report (process start and load excluded)."""
    cmd = [exe, "run", "--model", model, "--raw-prompt", "-p", prompt, "--max-tokens", "1", "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"finetp failed ({r.returncode}): {' '.join(cmd[:6])} ...\n{r.stderr[-2000:]}")
    return n_ids / json.loads(r.stdout)["outputs"][0]["ttft_s"]


def prefill_rounds(args):
    """Prefill speed on a prompt of about --prefill-tokens tokens, alternating in one run."""
    llm = llama_cpp.Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                          n_ctx=args.prefill_tokens + 64, n_batch=512, n_ubatch=512, logits_all=False, verbose=False)
    words = []
    while len(llm.tokenize(" ".join(words).encode(), add_bos=False, special=False)) < args.prefill_tokens:
        words += TEXT.split()
    prompt = " ".join(words)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    print(f"\nprefill: a prompt of {len(ids)} tokens, {args.rounds} rounds alternating; llama.cpp n_batch = n_ubatch = 512, "
          f"finetp --max-num-batched-tokens {args.chunk}")
    rows = {"llama.cpp counter": [], "llama.cpp wall": [], "finetp": []}
    for r in range(args.rounds):
        ll = llama_prefill(llm, ids)
        ft = finetp_prefill(args.finetp, args.model, prompt, len(ids), ["--max-num-batched-tokens", str(args.chunk)])
        rows["llama.cpp counter"].append(ll["counter"])
        rows["llama.cpp wall"].append(ll["wall"])
        rows["finetp"].append(ft)
        print(f"round {r}: llama.cpp {ll['counter']:.1f} tokens/s (counter, {ll['n']} tokens), {ll['wall']:.1f} (wall) | finetp {ft:.1f} tokens/s")
    med = medians(rows, "medians over rounds (tokens/s):", 1)
    print(f"finetp prefill tokens/s over llama.cpp's: {med['finetp'] / med['llama.cpp counter']:.2f}x (counter), "
          f"{med['finetp'] / med['llama.cpp wall']:.2f}x (wall)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--finetp", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-words", type=int, default=24, help="repeat the text to about this many words")
    ap.add_argument("--prefill-tokens", type=int, default=0, help="also time the prefill of a prompt of about this many tokens")
    ap.add_argument("--chunk", type=int, default=512, help="finetp's --max-num-batched-tokens for the prefill")
    ap.add_argument("--prefill-only", action="store_true", help="skip the decode rounds")
    args = ap.parse_args()
    if args.prefill_only:
        return prefill_rounds(args)

    if args.threads != os.cpu_count():
        print(f"note: finetp runs on all {os.cpu_count()} cores (shared by its ranks); llama.cpp on --threads {args.threads}")
    words = (TEXT * (args.prompt_words // len(TEXT.split()) + 1)).split()[: args.prompt_words]
    prompt = " ".join(words)
    llm = llama_cpp.Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                          n_ctx=1024, n_batch=512, logits_all=True, verbose=False)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=False)
    print(f"model {args.model}\nthreads {args.threads}, prompt {len(ids)} tokens, {args.tokens} decode tokens, "
          f"{args.rounds} rounds alternating (llama-cpp-python {llama_cpp.__version__})")
    setups = {"dp1": ["--data-parallel-size", "1"],
              "dp2-all2": ["--data-parallel-size", "2", "--additional-config",
                           json.dumps({"finegrained_tp_config": {k: 2 for k in (
                               "embedding_tensor_parallel_size", "lmhead_tensor_parallel_size",
                               "oproj_tensor_parallel_size", "mlp_tensor_parallel_size")}})]}
    rows = {"llama.cpp counter": [], "llama.cpp wall": [], "finetp dp1": [], "finetp dp2-all2": [],
            "llama.cpp prefill tok/s": []}
    agree = None
    for r in range(args.rounds):
        ll = llama_round(llm, ids, args.tokens)
        ft = finetp_round(args.finetp, args.model, prompt, args.tokens, setups["dp1"])
        f2 = finetp_round(args.finetp, args.model, prompt, args.tokens, setups["dp2-all2"])
        rows["llama.cpp counter"].append(ll["decode_ms_counter"])
        rows["llama.cpp wall"].append(ll["decode_ms_wall"])
        rows["llama.cpp prefill tok/s"].append(ll["prefill_tok_s"])
        rows["finetp dp1"].append(ft["decode_ms"])
        rows["finetp dp2-all2"].append(f2["decode_ms"])
        n = next((i for i, (a, b) in enumerate(zip(ll["tokens"], ft["tokens"])) if a != b), min(len(ll["tokens"]), len(ft["tokens"])))
        agree = n
        print(f"round {r}: llama.cpp {ll['decode_ms_counter']:.2f} ms/token (counter), {ll['decode_ms_wall']:.2f} (wall) | "
              f"finetp dp1 {ft['decode_ms']:.2f} | finetp dp2 all-2 {f2['decode_ms']:.2f} ms/step | same first {n} tokens")
    med = medians(rows, "\nmedians over rounds:", 2)
    print(f"\nfinetp dp1 decode tokens/s over llama.cpp's: {med['llama.cpp counter'] / med['finetp dp1']:.2f}x (counter), "
          f"{med['llama.cpp wall'] / med['finetp dp1']:.2f}x (wall)")
    print(f"finetp dp2, every component at size 2: {med['finetp dp2-all2']:.2f} ms per step (2 tokens, one per DP rank)")
    print(f"greedy tokens equal to llama.cpp's for the first {agree} of {args.tokens}")
    if args.prefill_tokens:
        prefill_rounds(args)


if __name__ == "__main__":
    main()
