"""Training throughput and model FLOP utilisation (MFU) of tandem's SFT and reward-model trainers.

    python benchmarks/train_throughput.py --size medium --steps 20 --out medium.json
    python benchmarks/train_throughput.py --device cuda --size qwen2-0.5b --batch-size 32 --out gpu.json

In one run: (1) the machine's matmul peak (best of a few timed square matmuls, fp32 and bf16);
(2) the real `SFTTrainer` (padding-free) and `RewardModelTrainer` on sentiment data, each for `--steps`
optimizer steps of `Trainer.train()`, timed per step by a clock on the optimizer step, with the first
`--warmup-steps` steps left out; (3) MFU = achieved training FLOP/s / measured peak, against both peaks.

The sentiment task's examples are ~30 tokens; with `--seq-len L > 0` consecutive tokenized examples are
joined into one sequence of at most L tokens (each keeps its own prompt/completion mask; a preference
pair becomes prompt_1 + [response_1, prompt_2, response_2, ...] on each side), so MFU is measured at a
realistic length. `--seq-len 0` uses the task's examples as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, Qwen2Config, Qwen2ForCausalLM

from tandem.data import tokenize_preference, tokenize_sft
from tandem.models.factory import MODEL_SIZES, build_model, count_parameters
from tandem.models.tokenizer import train_tokenizer
from tandem.tasks import get_task
from tandem.trainers.loop import resolve_precision
from tandem.trainers.rm import RMConfig, RewardModelTrainer
from tandem.trainers.sft import SFTConfig, SFTTrainer

QWEN2_05B = "qwen2-0.5b"  # Qwen2-0.5B's shape with random weights, for the GPU run


def synchronize(device: str) -> None:
    """Wait for queued GPU kernels (they run asynchronously) before reading the clock."""
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak_tflops(device: str, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best-of-`repeats` TFLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs), after two warm-up products."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    inner = 10 if device == "cuda" else 1  # one GPU matmul is too short to time on its own
    for _ in range(2):
        a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best / 1e12


def build_models(size: str, arch: str, tokenizer):
    """(causal LM, reward model) of the same shape; the reward model is the backbone with a 1-output head."""
    if size == QWEN2_05B:
        config = Qwen2Config(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa",
        )
        torch.manual_seed(0)
        lm = Qwen2ForCausalLM(config)  # the small tokenizer's ids all fall inside this vocabulary
    else:
        lm = build_model(size, tokenizer, arch)
    rm_config = lm.config.__class__.from_dict(lm.config.to_dict())
    rm_config.num_labels = 1
    return lm, AutoModelForSequenceClassification.from_config(rm_config)


def training_flops_per_token(model, seq_len: float, lm_head: bool) -> float:
    """6 N (forward + backward of the non-embedding weights) + 12 L h T (attention scores and values).

    The attention term is the PaLM paper's appendix B formula (Chowdhery et al., 2022), counting full
    (not causal-halved) attention over context length T. The output projection to the vocabulary adds
    6 h V per token for a language model, tied or not; the embedding lookup does no FLOPs.
    """
    embeddings = {id(model.get_input_embeddings().weight)}
    if model.get_output_embeddings() is not None:
        embeddings.add(id(model.get_output_embeddings().weight))
    unique = {id(p): p for p in model.parameters()}
    non_embedding = sum(p.numel() for key, p in unique.items() if key not in embeddings)
    config = model.config
    flops = 6 * non_embedding + 12 * config.num_hidden_layers * config.hidden_size * seq_len
    if lm_head:
        flops += 6 * config.hidden_size * config.vocab_size
    return flops


def join_sft(parts: list[dict]) -> dict:  # one sequence; each part keeps its prompt/completion mask
    return {key: [t for part in parts for t in part[key]] for key in ("input_ids", "completion_mask")}


def join_pairs(parts: list[dict]) -> dict:  # prompt_1 + [response_1, prompt_2, response_2, ...] per side
    first, rest = parts[0], parts[1:]
    joined = {k: first[k] + [t for p in rest for t in p["prompt_ids"] + p[k]] for k in ("chosen_ids", "rejected_ids")}
    return {"prompt_ids": first["prompt_ids"], **joined}


def pair_length(example: dict) -> int:  # the longer of the two rows
    return len(example["prompt_ids"]) + max(len(example["chosen_ids"]), len(example["rejected_ids"]))


def lengthen(examples: list[dict], target: int, join, length) -> list[dict]:
    """Greedily join consecutive examples into ones of at most `target` tokens (a trailing partial one is dropped)."""
    if target <= 0:
        return examples
    joined, group = [], []
    for example in examples:
        if group and length(join(group + [example])) > target:
            joined.append(join(group))
            group = []
        group.append(example)
    return joined


class StepClock:
    """Timestamps every optimizer step of a running `Trainer` and counts the tokens and units each step used.

    It wraps the trainer's own `batch_tokens`, `batch_units` and `optimizer.step`, so what is timed is exactly
    `Trainer.train()`'s loop: collate, forward, backward, clipping, optimizer and scheduler steps, logging.
    """

    def __init__(self, trainer, device: str):
        self.times, self.tokens, self.units = [time.perf_counter()], [], []
        self._tokens = self._units = 0
        batch_tokens, batch_units, optimizer_step = trainer.batch_tokens, trainer.batch_units, trainer.optimizer.step

        def count_tokens(batch):
            self._tokens += (n := batch_tokens(batch))
            return n

        def count_units(batch):
            self._units += (n := batch_units(batch))
            return n

        def timed_step(*args, **kwargs):
            result = optimizer_step(*args, **kwargs)
            synchronize(device)
            self.times.append(time.perf_counter())
            self.tokens.append(self._tokens)
            self.units.append(self._units)
            self._tokens = self._units = 0
            return result

        trainer.batch_tokens, trainer.batch_units, trainer.optimizer.step = count_tokens, count_units, timed_step

    def summary(self, warmup: int) -> dict:
        """Rates over the steps after the first `warmup` ones."""
        seconds = self.times[-1] - self.times[warmup]
        tokens, units = sum(self.tokens[warmup:]), sum(self.units[warmup:])
        step_seconds = [b - a for a, b in zip(self.times, self.times[1:])]
        # The median step's rate shrugs off a step slowed by another process on a shared machine.
        step_rates = sorted(n / t for n, t in zip(self.tokens[warmup:], step_seconds[warmup:]))
        return {
            "timed_steps": len(self.tokens) - warmup, "seconds": seconds, "tokens": tokens, "units": units,
            "tokens_per_s": tokens / seconds, "units_per_s": units / seconds,
            "median_step_tokens_per_s": step_rates[len(step_rates) // 2], "step_seconds": step_seconds,
            "step_tokens": self.tokens,
        }


def run_trainer(trainer_class, config, model, tokenizer, data: list[dict], args) -> dict:
    """Run `trainer_class(...).train()` with checkpoint writing switched off; return the clock's summary."""
    trainer = trainer_class(config, model, tokenizer, data)
    trainer._save_checkpoint = lambda step: None  # disk writes are not training throughput
    trainer.save_final = lambda model, folder: None
    clock = StepClock(trainer, args.device)
    trainer.train()
    summary = clock.summary(args.warmup_steps)
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").read_text().splitlines()]
    summary["trainer_tokens_per_s_all_steps"] = records[-1].get("train/tokens_per_s")
    return summary


def with_mfu(run: dict, model, lengths: list[int], peak: dict, lm_head: bool) -> dict:
    """Add the FLOPs per token, achieved TFLOP/s and MFU against both peaks to a trainer's timing summary."""
    context = sum(n * n for n in lengths) / sum(lengths)  # the T a token attends over, averaged over tokens
    flops = training_flops_per_token(model, context, lm_head)
    achieved = run["tokens_per_s"] * flops / 1e12
    return {**run, "mean_sequence_tokens": sum(lengths) / len(lengths), "attention_context_tokens": context,
            "train_flops_per_token": flops, "achieved_tflops": achieved,
            "mfu_vs_bf16_peak": achieved / peak["bf16"], "mfu_vs_fp32_peak": achieved / peak["fp32"]}


def machine_info(device: str) -> dict:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    info = {"cpu": cpu, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return info


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="medium", choices=[*MODEL_SIZES, QWEN2_05B])
    parser.add_argument("--arch", default="llama", choices=["llama", "qwen2"], help="Ignored for qwen2-0.5b.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "no"])
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per trainer, warm-up included.")
    parser.add_argument("--warmup-steps", type=int, default=2, help="First steps left out of the timing.")
    parser.add_argument("--batch-size", type=int, default=8, help="Sequences (SFT) or pairs (RM) per step.")
    parser.add_argument("--seq-len", type=int, default=256, help="Join examples up to this many tokens (0: as given).")
    parser.add_argument("--max-length", type=int, default=512, help="Trainer truncation length.")
    parser.add_argument("--matmul-size", type=int, help="Side of the peak matmul (default 2048 CPU, 8192 GPU).")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--compile", action="store_true", help="The trainers' --compile (torch.compile of the training forward).")
    parser.add_argument("--out", type=Path, help="Write every figure as JSON here.")
    args = parser.parse_args()
    if not 1 <= args.warmup_steps < args.steps:
        parser.error("need 1 <= --warmup-steps < --steps")
    if args.seq_len > args.max_length:
        parser.error("--seq-len must not exceed --max-length")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the trainers' Accelerator would otherwise take a GPU
    n = args.matmul_size or (8192 if args.device == "cuda" else 2048)
    peak = {name: matmul_peak_tflops(args.device, dtype, n)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    task = get_task("sentiment")
    vocab = MODEL_SIZES[args.size].vocab_size if args.size in MODEL_SIZES else 4096
    tokenizer = train_tokenizer(task.pretrain_corpus(2000), vocab_size=vocab)
    lm, rm = build_models(args.size, args.arch, tokenizer)
    # Enough task examples that each step sees fresh data after joining (about 30 tokens each).
    n_task = args.steps * args.batch_size * max(1, args.seq_len // 20) + 64
    sft_data = lengthen([tokenize_sft(e, tokenizer, args.max_length) for e in task.sft_examples(n_task)],
                        args.seq_len, join_sft, lambda e: len(e["input_ids"]))
    pair_data = lengthen([tokenize_preference(e, tokenizer, args.max_length) for e in task.preference_pairs(n_task)],
                         args.seq_len, join_pairs, pair_length)

    common = dict(max_steps=args.steps, batch_size=args.batch_size, micro_batch_size=args.batch_size,
                  mixed_precision=args.precision, max_length=args.max_length, progress=False, log_every=args.steps,
                  compile=args.compile)
    rm_rows = [len(e["prompt_ids"]) + len(e[k]) for e in pair_data for k in ("chosen_ids", "rejected_ids")]
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        sft_config = SFTConfig(out=Path(tmp, "sft"), padding_free=True, **common)
        sft = run_trainer(SFTTrainer, sft_config, lm, tokenizer, sft_data, args)
        rm_config = RMConfig(out=Path(tmp, "rm"), **common)
        rm_run = run_trainer(RewardModelTrainer, rm_config, rm, tokenizer, pair_data, args)
    results = {
        "sft": with_mfu(sft, lm, [len(e["input_ids"]) for e in sft_data], peak, lm_head=True),
        "rm": with_mfu(rm_run, rm, rm_rows, peak, lm_head=False),
    }

    config = lm.config
    report = {
        "machine": machine_info(args.device),
        "settings": {**vars(args), "out": str(args.out) if args.out else None, "matmul_size": n,
                     "resolved_precision": resolve_precision(args.precision), "padding_free_sft": True,
                     "sft_examples": len(sft_data), "preference_pairs": len(pair_data)},
        "timing": "per-step wall clock inside Trainer.train() (timestamp at each optimizer step), "
                  f"first {args.warmup_steps} steps skipped; checkpoint writes off; tokens are real (no padding)",
        "model": {"size": args.size, "arch": config.model_type, "hidden": config.hidden_size,
                  "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
                  "kv_heads": config.num_key_value_heads, "intermediate": config.intermediate_size,
                  "vocab": config.vocab_size, "parameters": count_parameters(lm)},
        "peak_tflops": peak,
        **results,
    }
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def print_table(report: dict) -> None:
    m, s, peak = report["model"], report["settings"], report["peak_tflops"]
    print(f"\n{report['machine']['cpu']} ({report['machine']['torch_threads']} threads), device {s['device']}, "
          f"precision {s['resolved_precision']}")
    print(f"model {m['size']} ({m['arch']}, {m['parameters'] / 1e6:.1f}M params, {m['layers']}x{m['hidden']}), "
          f"batch {s['batch_size']}, seq-len {s['seq_len']}")
    print(f"matmul peak ({s['matmul_size']}^2): fp32 {peak['fp32']:.3f}  bf16 {peak['bf16']:.3f} TFLOP/s\n")
    header = ("tokens/s", "units/s", "seq tok", "TFLOP/s", "MFU bf16", "MFU fp32")
    print(f"{'trainer':8} " + " ".join(f"{h:>{w}}" for h, w in zip(header, (10, 20, 8, 8, 9, 9))))
    for name, unit in (("sft", "loss tok"), ("rm", "pairs")):
        r = report[name]
        print(f"{name:8} {r['tokens_per_s']:10.0f} {r['units_per_s']:11.1f} {unit:>8} {r['mean_sequence_tokens']:8.0f} "
              f"{r['achieved_tflops']:8.3f} {r['mfu_vs_bf16_peak']:9.1%} {r['mfu_vs_fp32_peak']:9.1%}")


if __name__ == "__main__":
    main()
