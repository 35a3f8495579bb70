"""GPU check: SFT, DPO and GRPO throughput (tokens/s) and MFU of tandem's own trainers on a Qwen2-0.5B-shaped model.

    benchmarks/gpu_check.sh                 # on a GPU machine: the 0.5B model, a few minutes
    benchmarks/gpu_check.sh --tiny          # anywhere: a tiny model and a few steps (what the test runs)

The model is Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocabulary
151,936, tied embeddings; 494M parameters) built from a `Qwen2Config` with random weights: nothing is downloaded.
Training is tandem's: fp32 master weights, bf16 autocast (`--precision`), fused AdamW, the one training loop.

- SFT: `SFTTrainer`, padding-free, on sentiment demonstrations joined into sequences of about `--seq-len` tokens.
- DPO: `DPOTrainer` (sigmoid loss, reference log-probs precomputed) on sentiment pairs joined likewise.
- GRPO: `GRPOTrainer`, `--grpo-prompts` prompts x `--group` samples, `--new-tokens` sampled tokens each (a random
  model rarely stops early), KL-to-reference loss (beta 0.04, so a reference forward), one update per rollout.

Tokens/s counts real tokens (no padding) over the steps after `--warmup-steps`, timed at each optimizer step
(GPU synchronised). Training FLOPs per token are 6 N + 12 L h T + 6 h V (`train_throughput.py`); GRPO's step
adds 2 N' per token for generation (prefill and decode) and the reference forward, N' = N + h V the forward
cost, so its MFU is of the whole RL step. MFU is against the measured bf16 matmul peak and, on an H100/H200,
against the datasheet's dense bf16 peak (989 TFLOP/s). Writes one JSON file (`--out`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_throughput's helpers, beside this file
from train_throughput import (  # noqa: E402
    StepClock, join_pairs, join_sft, lengthen, machine_info, matmul_peak_tflops, pair_length, run_trainer,
    synchronize, training_flops_per_token,
)
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from tandem.data import tokenize_preference, tokenize_sft  # noqa: E402
from tandem.models.factory import count_parameters  # noqa: E402
from tandem.models.tokenizer import train_tokenizer  # noqa: E402
from tandem.rewards import build_reward  # noqa: E402
from tandem.tasks import get_task  # noqa: E402
from tandem.trainers.dpo import DPOConfig, DPOTrainer  # noqa: E402
from tandem.trainers.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from tandem.trainers.sft import SFTConfig, SFTTrainer  # noqa: E402

DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense, SXM
SHAPES = {
    "qwen2-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1),
}
SETTINGS = {  # per mode: steps, warm-up, batch sizes and lengths
    "full": dict(steps=12, warmup_steps=2, sft_batch=32, dpo_batch=16, seq_len=512, grpo_steps=4, grpo_prompts=16,
                 group=8, new_tokens=128, matmul_size=8192),
    "tiny": dict(steps=3, warmup_steps=1, sft_batch=4, dpo_batch=2, seq_len=64, grpo_steps=2, grpo_prompts=2,
                 group=2, new_tokens=8, matmul_size=256),
}


def build_policy(shape: str, tokenizer) -> Qwen2ForCausalLM:
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         attn_implementation="sdpa")
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)  # the small tokenizer's ids all fall inside the vocabulary


def mfu(tokens_per_s: float, flops_per_token: float, peaks: dict) -> dict:
    achieved = tokens_per_s * flops_per_token / 1e12
    return {"train_flops_per_token": flops_per_token, "achieved_tflops": achieved,
            **{f"mfu_vs_{name}": achieved / peak for name, peak in peaks.items() if peak}}


def context_of(lengths: list[int]) -> float:
    return sum(n * n for n in lengths) / sum(lengths)  # the mean T a token attends over


def forward_flops_per_token(model, context: float) -> float:
    """2 N' + 4 L h T: a forward pass (N' with the output projection to the vocabulary)."""
    return training_flops_per_token(model, context, lm_head=True) / 3


def grpo_run(model, tokenizer, task, args, out: Path, peaks: dict) -> dict:
    config = GRPOConfig(out=out, task="sentiment", max_steps=args.grpo_steps, batch_size=args.grpo_prompts,
                        samples_per_prompt=args.group, micro_batch_size=args.grpo_prompts * args.group,
                        max_new_tokens=args.new_tokens, kl_coef=0.04, n_eval=0, mixed_precision=args.precision,
                        progress=False, log_every=1, max_length=512, report_to=[])
    prompts = [{"prompt": row["prompt"]} for row in task.sft_examples(args.grpo_prompts * args.grpo_steps, seed=0)]
    reference = copy.deepcopy(model)
    trainer = GRPOTrainer(config, model, tokenizer, prompts, reference, build_reward("task:sentiment", tokenizer),
                          task=None, max_new_tokens=args.new_tokens)
    trainer._save_checkpoint = lambda step: None
    trainer.save_final = lambda model, folder: None
    marks, tokens, lengths = [], [], []
    collect, update = trainer.collect, trainer.update

    def timed_collect(step):
        synchronize(args.device)
        marks.append(time.perf_counter())
        return collect(step)

    def counted_update(data, step):
        result = update(data, step)
        synchronize(args.device)
        marks.append(time.perf_counter())
        rows = data.batch.attention_mask.sum(-1).tolist()
        tokens.append(sum(rows))
        lengths.extend(rows)
        return result

    trainer.collect, trainer.update = timed_collect, counted_update
    trainer.train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = range(args.warmup_steps if args.grpo_steps > args.warmup_steps else 0, args.grpo_steps)
    seconds = sum(marks[2 * i + 1] - marks[2 * i] for i in timed)
    tokens_per_s = sum(tokens[i] for i in timed) / seconds
    context = context_of(lengths)
    # generation + reference forward + one update, per real token of the rollout
    flops = 2 * forward_flops_per_token(model, context) + training_flops_per_token(model, context, lm_head=True)
    times = {key: sum(records[i].get(key, 0.0) for i in timed) / len(timed)
             for key in ("train/time/generate", "train/time/score", "train/time/logprobs_advantages",
                         "train/time/update", "train/time/step")}
    return {"timed_steps": len(timed), "seconds": seconds, "tokens": sum(tokens[i] for i in timed),
            "tokens_per_s": tokens_per_s, "sequences_per_step": args.grpo_prompts * args.group,
            "mean_sequence_tokens": sum(lengths) / len(lengths), "attention_context_tokens": context,
            "mean_seconds_per_step": times, **mfu(tokens_per_s, flops, peaks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="A tiny model and a few steps (CPU is fine): checks the script.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="bf16", choices=["bf16", "no"])
    parser.add_argument("--out", type=Path, help="The JSON file (default: $OUT/gpu_check.json, else benchmarks/results/).")
    for name, value in SETTINGS["full"].items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"(default: {value}; --tiny: {SETTINGS['tiny'][name]})")
    args = parser.parse_args()
    for name, value in SETTINGS["tiny" if args.tiny else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no GPU: run with --tiny (and --device cpu) to check the script on CPU")
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (optimizer, norms) as a GPU user runs them
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).resolve().parent / "results"
    out_file = args.out or folder / ("gpu_check_tiny.json" if args.tiny else "gpu_check.json")
    started = time.perf_counter()

    peaks = {"measured_bf16_peak": matmul_peak_tflops(args.device, torch.bfloat16, args.matmul_size)}
    if args.device == "cuda":
        name = torch.cuda.get_device_name()
        peaks["datasheet_bf16_peak"] = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    task = get_task("sentiment")
    tokenizer = train_tokenizer(task.pretrain_corpus(2000 if not args.tiny else 300), vocab_size=512 if args.tiny else 4096)
    shape = "tiny" if args.tiny else "qwen2-0.5b"
    n_examples = args.steps * max(args.sft_batch, args.dpo_batch) * max(1, args.seq_len // 20) + 64
    sft_data = lengthen([tokenize_sft(e, tokenizer, args.seq_len) for e in task.sft_examples(n_examples)],
                        args.seq_len, join_sft, lambda e: len(e["input_ids"]))
    pairs = lengthen([tokenize_preference(e, tokenizer, args.seq_len) for e in task.preference_pairs(n_examples)],
                     args.seq_len, join_pairs, pair_length)
    common = dict(max_steps=args.steps, mixed_precision=args.precision, max_length=max(args.seq_len, 64),
                  progress=False, log_every=args.steps, n_eval=0, report_to=[])
    results = {}
    with tempfile.TemporaryDirectory(prefix="tandem-gpu-check-") as tmp:
        model = build_policy(shape, tokenizer)
        parameters = count_parameters(model)
        sft_config = SFTConfig(out=Path(tmp, "sft"), padding_free=True, batch_size=args.sft_batch,
                               micro_batch_size=args.sft_batch, **common)
        run = run_trainer(SFTTrainer, sft_config, model, tokenizer, sft_data, args)
        lengths = [len(e["input_ids"]) for e in sft_data]
        results["sft"] = {**run, "mean_sequence_tokens": sum(lengths) / len(lengths),
                          **mfu(run["tokens_per_s"], training_flops_per_token(model, context_of(lengths), True), peaks)}

        model = build_policy(shape, tokenizer)
        dpo_config = DPOConfig(out=Path(tmp, "dpo"), batch_size=args.dpo_batch, micro_batch_size=args.dpo_batch, **common)
        trainer = DPOTrainer(dpo_config, model, copy.deepcopy(model), tokenizer, pairs, [])
        trainer._save_checkpoint = lambda step: None
        trainer.save_final = lambda model, folder: None
        clock = StepClock(trainer, args.device)
        trainer.train()
        run = clock.summary(args.warmup_steps)
        rows = [len(e["prompt_ids"]) + len(e[k]) for e in pairs for k in ("chosen_ids", "rejected_ids")]
        results["dpo"] = {**{k: v for k, v in run.items() if k != "units_per_s"}, "pairs_per_s": run["units_per_s"],
                          "mean_sequence_tokens": sum(rows) / len(rows),
                          **mfu(run["tokens_per_s"], training_flops_per_token(model, context_of(rows), True), peaks)}
        del trainer, clock

        model = build_policy(shape, tokenizer)
        results["grpo"] = grpo_run(model, tokenizer, task, args, Path(tmp, "grpo"), peaks)

    report = {"machine": machine_info(args.device), "mode": "tiny" if args.tiny else "full",
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "model": {"shape": shape, **SHAPES[shape], "parameters": parameters, "dtype": f"{args.precision} autocast, fp32 master weights"},
              "peak_tflops": peaks, **results, "wall_seconds": time.perf_counter() - started}
    if args.device == "cuda":
        report["machine"]["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(report, indent=2) + "\n")
    for name in ("sft", "dpo", "grpo"):
        r = results[name]
        shares = ", ".join(f"{k.removeprefix('mfu_vs_')} {v:.1%}" for k, v in r.items() if k.startswith("mfu_vs_"))
        print(f"{name:5} {r['tokens_per_s']:12.0f} tokens/s  {r['achieved_tflops']:8.2f} TFLOP/s  MFU {shares}")
    print(f"wrote {out_file} ({report['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
