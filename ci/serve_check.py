#!/usr/bin/env python3
"""`finetp serve` checked from the outside with the official `openai` client (ci/serve.sh).

1. A chat completion streamed from SmolLM2 at DP 4 with all four components at size 2 equals
   `finetp run`'s greedy text for the same prompt and layout.
2. The log-probabilities of the streamed tokens, and `echo` prompt log-probabilities, equal
   those of an unsharded server (DP 1) within 1e-4. Both on the f32 path (`--dequantize`),
   where sharding is exact.
3. A bounded load test on the sharded server: CLIENTS concurrent clients send REQUESTS
   requests of mixed lengths, some disconnecting after their first chunks; every other request
   must be answered once, and each temperature-0 answer must equal the same request served
   alone. Prints throughput and latency percentiles (docs/perf.md).

Usage: serve_check.py FINETP_BINARY [--clients N] [--requests N]
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time

import urllib.error
import urllib.request

import openai

LAYOUT = ["-d", "4", "--additional-config", json.dumps({"finegrained_tp_config": {
    "embedding_tensor_parallel_size": 2, "lmhead_tensor_parallel_size": 2,
    "oproj_tensor_parallel_size": 2, "mlp_tensor_parallel_size": 2}})]
PROMPT = "What is the capital of France?"
TOL = 1e-4


class Server:
    """`finetp serve` on a free port; the address is read off its stderr."""

    def __init__(self, binary, flags):
        self.proc = subprocess.Popen([binary, "serve", "--port", "0", "--dequantize", "--max-model-len", "1024",
                                      "--kv-cache-memory-fraction", "0.1", *flags],
                                     stderr=subprocess.PIPE, text=True)
        self.addr, self.log = None, []
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                if "serving `" in line and " on http://" in line:
                    self.addr = line.split(" on ")[1].split()[0]
                    self.model = line.split("`")[1]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(120)
        if not self.addr:
            sys.exit("the server did not start:\n" + "".join(self.log))
        for _ in range(600):
            try:
                if urllib.request.urlopen(self.addr + "/health", timeout=5).status == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        else:
            sys.exit("the server never became healthy:\n" + "".join(self.log))
        self.client = openai.OpenAI(base_url=self.addr + "/v1", api_key="none", max_retries=0, timeout=300)

    def stop(self):
        self.proc.terminate()
        code = self.proc.wait(60)
        if code != 0:
            sys.exit(f"the server exited {code} on SIGTERM:\n" + "".join(self.log))


def run_text(binary, prompt, max_tokens):
    out = subprocess.run([binary, "run", "--dequantize", *LAYOUT, "--prompt", prompt, "--max-tokens", str(max_tokens)],
                         check=True, capture_output=True, text=True).stdout
    # "--- request 0 (DP rank 0) ---\n> PROMPT\nTEXT\n\n"
    return out.split(f"> {prompt}\n", 1)[1].split("\n\nPer-rank weight memory", 1)[0].strip()


def close(a, b, what):
    if len(a) != len(b):
        sys.exit(f"{what}: {len(a)} against {len(b)} entries")
    worst = 0.0
    for x, y in zip(a, b):
        if (x is None) != (y is None):
            sys.exit(f"{what}: {x} against {y}")
        if x is not None:
            worst = max(worst, abs(x - y))
    if worst > TOL:
        sys.exit(f"{what}: differ by {worst:.3g} > {TOL}")
    return worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=256)
    args = ap.parse_args()

    sharded = Server(args.binary, LAYOUT + ["--max-num-seqs", "16"])
    unsharded = Server(args.binary, ["-d", "1"])
    try:
        # 1. Streamed chat == finetp run.
        stream = sharded.client.chat.completions.create(
            model=sharded.model, messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=32,
            stream=True, logprobs=True, top_logprobs=2)
        text, lps, finish = "", [], None
        for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
                if c.logprobs and c.logprobs.content:
                    lps += [t.logprob for t in c.logprobs.content]
                finish = c.finish_reason or finish
        want = run_text(args.binary, PROMPT, 32)
        if text.strip() != want:
            sys.exit(f"streamed text differs from finetp run's:\n  serve: {text!r}\n  run:   {want!r}")
        print(f"streamed chat completion ({len(lps)} tokens, finish {finish}) equals finetp run's text: {want!r}")

        # 2. Log-probabilities against the unsharded server.
        ref = unsharded.client.chat.completions.create(
            model=unsharded.model, messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=32,
            logprobs=True, top_logprobs=2)
        if ref.choices[0].message.content != text:
            sys.exit(f"the unsharded server's text differs: {ref.choices[0].message.content!r}")
        worst = close(lps, [t.logprob for t in ref.choices[0].logprobs.content], "token logprobs")
        print(f"token logprobs: sharded == unsharded within {worst:.2g}")
        echo = [s.client.completions.create(model=s.model, prompt="The ocean is deep and", max_tokens=4, temperature=0,
                                            echo=True, logprobs=2) for s in (sharded, unsharded)]
        a, b = (e.choices[0].logprobs for e in echo)
        if a.tokens != b.tokens or echo[0].choices[0].text != echo[1].choices[0].text:
            sys.exit(f"echo differs: {a.tokens} against {b.tokens}")
        worst = close(a.token_logprobs, b.token_logprobs, "echo prompt logprobs")
        print(f"echo prompt + completion logprobs ({len(a.tokens)} tokens): sharded == unsharded within {worst:.2g}")

        # 3. Load test.
        load_test(sharded, args.clients, args.requests)
    finally:
        for s in (sharded, unsharded):
            if s.proc.poll() is None:
                s.stop()
    print("serve check passed; both servers exited 0 on SIGTERM")


PROMPTS = ["The ocean is", "My favourite food is", "In 1969, astronauts", "The best way to learn",
           "Paris is a city", "Dogs and cats", "The weather today", "Once upon a time"]
LENGTHS = [4, 12, 24]


def load_test(server, clients, total):
    c = server.client
    alone = {}
    for p in PROMPTS:
        for n in LENGTHS:
            alone[(p, n)] = c.completions.create(model=server.model, prompt=p, max_tokens=n, temperature=0).choices[0].text
    rng = random.Random(7)
    jobs = [(i, rng.choice(PROMPTS), rng.choice(LENGTHS), i % 8 == 5) for i in range(total)]
    results, lock, failures = {}, threading.Lock(), []
    it = iter(jobs)

    def worker():
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                return
            i, p, n, leave = job
            t0 = time.perf_counter()
            try:
                if leave:
                    # Read two chunks, then hang up.
                    with c.completions.create(model=server.model, prompt=p, max_tokens=n, temperature=0, stream=True) as s:
                        for k, _ in enumerate(s):
                            if k == 1:
                                break
                    with lock:
                        results[i] = ("left", None, None, 0)
                    continue
                s = c.completions.create(model=server.model, prompt=p, max_tokens=n, temperature=0, stream=True,
                                         stream_options={"include_usage": True})
                text, first, used = "", None, 0
                for chunk in s:
                    first = first or time.perf_counter()
                    text += chunk.choices[0].text if chunk.choices else ""
                    used = chunk.usage.completion_tokens if chunk.usage else used
                end = time.perf_counter()
                with lock:
                    if i in results:
                        failures.append(f"request {i} answered twice")
                    results[i] = (text, first - t0, end - t0, used)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                with lock:
                    failures.append(f"request {i}: {e!r}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if failures:
        sys.exit("load test failures:\n  " + "\n  ".join(failures[:20]))
    if sorted(results) != list(range(total)):
        sys.exit(f"{total - len(results)} requests were never answered")
    wrong = [(i, p, n, results[i][0], alone[(p, n)]) for i, p, n, leave in jobs if not leave and results[i][0] != alone[(p, n)]]
    if wrong:
        sys.exit(f"{len(wrong)} answers differ from the same request served alone, e.g. {wrong[0]}")
    done = [results[i] for i, _, _, leave in jobs if not leave]
    tokens = sum(r[3] for r in done)
    ttft = sorted(r[1] for r in done)
    e2e = sorted(r[2] for r in done)
    pct = lambda v, q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    metrics = urllib.request.urlopen(server.addr + "/metrics", timeout=30).read().decode()
    if "finetp_num_requests_waiting 0" not in metrics:
        sys.exit("requests still waiting after the load test:\n" + metrics)
    print(f"load test: {clients} clients, {total} requests ({total - len(done)} hung up early), all answered once and each equal to itself served alone")
    print(f"  {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} tokens/s, {len(done) / wall:.2f} requests/s")
    print(f"  TTFT p50 {pct(ttft, .5) * 1e3:.0f} ms, p90 {pct(ttft, .9) * 1e3:.0f} ms, p99 {pct(ttft, .99) * 1e3:.0f} ms;"
          f" latency p50 {pct(e2e, .5) * 1e3:.0f} ms, p90 {pct(e2e, .9) * 1e3:.0f} ms, p99 {pct(e2e, .99) * 1e3:.0f} ms")
    print(f"  mean TTFT {statistics.mean(ttft) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
