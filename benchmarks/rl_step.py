"""Where an RL step's time goes: rollout throughput and one PPO / one GRPO step split into its phases, with MFU.

    python benchmarks/rl_step.py --size small --steps 6 --out rl_step.json
    python benchmarks/rl_step.py --size qwen2-0.5b --device cuda --batch-size 64   # on a GPU
    python benchmarks/rl_step.py --model SmolLM2-135M-Instruct.gguf --engine vllm   # a model on disk, vLLM rollouts

Runs the real `PPOTrainer` and `GRPOTrainer` (sentiment prompts, the task's gold reward, so no reward-model
forward muddles the split) for `--steps` rollout steps on a freshly built model, and reads back the time
each step logged for (on `--model PATH` instead: a Hugging Face directory or a .gguf file, loaded as tandem loads
any model):

- generation: the `--engine`'s rollout (hf: Hugging Face `generate` with a KV cache, left-padded prompts; vllm: an
  in-process vLLM engine, whose start-up is reported apart as `engine_start_s` and whose weight push after each
  update as `engine_sync`);
- scoring: the reward function;
- log-probs and advantages: the old-policy forward (with the value head for PPO) and the reference forward;
- update: `update_epochs x minibatches` forward/backward passes and optimizer steps.

FLOPs per phase: generation and the no-grad forwards take 2 N per token (N: non-embedding parameters,
plus the output projection 2 h V), the update 6 N per token per pass (see `train_throughput.py`). MFU =
achieved FLOP/s / the matmul peak measured in the same run (bf16 when autocast is bf16). Rollout throughput
is completion tokens generated per second of generation time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from tandem.models.factory import MODEL_SIZES
from tandem.models.tokenizer import train_tokenizer
from tandem.rewards import as_reward_source
from tandem.tasks import get_task
from tandem.trainers.grpo import GRPOConfig, GRPOTrainer
from tandem.trainers.ppo import PolicyWithValueHead, PPOConfig, PPOTrainer
from train_throughput import QWEN2_05B, build_models, machine_info, matmul_peak_tflops, training_flops_per_token

PHASES = ("time/generate", "time/score", "time/logprobs_advantages", "time/update", "time/engine_sync")


def forward_flops_per_token(model, context: float) -> float:
    """A forward pass is a third of the training FLOPs (6N -> 2N, attention likewise)."""
    return training_flops_per_token(model, context, lm_head=True) / 3


def run(kind: str, args, model_dir: Path, tokenizer, task, out: Path) -> dict:
    import time

    prompts = [{"prompt": e["prompt"]} for e in task.sft_examples(args.batch_size * args.steps)]
    reward = as_reward_source(lambda p, c, **k: task.gold_reward(p, c), "gold")
    common = dict(out=out, max_steps=args.steps, log_every=1, progress=False, n_eval=0, max_new_tokens=args.max_new_tokens,
                  mixed_precision=args.precision, micro_batch_size=args.micro_batch_size, temperature=1.0,
                  engine=args.engine)
    from tandem.models.loading import load_causal_lm

    started = time.perf_counter()
    if kind == "ppo":
        config = PPOConfig(**common, batch_size=args.batch_size, update_epochs=2, minibatches=2)
        model = PolicyWithValueHead(load_causal_lm(model_dir))
        trainer = PPOTrainer(config, model, tokenizer, prompts, load_causal_lm(model_dir), reward,
                             max_new_tokens=args.max_new_tokens)
    else:
        config = GRPOConfig(**common, batch_size=args.batch_size // args.group, samples_per_prompt=args.group,
                            kl_coef=0.04)
        trainer = GRPOTrainer(config, load_causal_lm(model_dir), tokenizer, prompts, load_causal_lm(model_dir), reward,
                              max_new_tokens=args.max_new_tokens)
    set_up = time.perf_counter() - started  # models loaded and (vllm) the engine started
    trainer._save_checkpoint = lambda step: None
    trainer.save_final = lambda model, folder: None
    lengths = []
    collect = trainer.collect

    def measured_collect(step):
        data = collect(step)
        batch = data.batch
        lengths.append((batch.attention_mask.sum(-1).tolist(), int(batch.completion_mask.sum())))
        return data

    trainer.collect = measured_collect
    trainer.train()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = records[args.warmup_steps:]
    seconds = {phase.split("/")[1]: sum(r.get(f"train/{phase}", 0.0) for r in timed) / len(timed) for phase in PHASES}
    rows = [n for step_lengths, _ in lengths[args.warmup_steps:] for n in step_lengths]
    completion_tokens = sum(c for _, c in lengths[args.warmup_steps:]) / len(timed)
    sequence_tokens = sum(rows) / len(timed)
    context = sum(n * n for n in rows) / sum(rows)
    forward = forward_flops_per_token(trainer.accelerator.unwrap_model(trainer.model).policy
                                      if kind == "ppo" else trainer.model, context)
    forwards_before_update = 1 + (trainer.reference is not None)  # old policy (+ value) and reference
    passes = config.update_epochs  # each row goes through forward+backward once per epoch
    flops = {"generate": forward * completion_tokens,
             "logprobs_advantages": forward * sequence_tokens * forwards_before_update,
             "update": 3 * forward * sequence_tokens * passes}
    return {"engine": args.engine, "set_up_s": set_up, "seconds_per_step": seconds,
            "completion_tokens_per_step": completion_tokens,
            "sequence_tokens_per_step": sequence_tokens,
            "rollout_completion_tokens_per_s": completion_tokens / seconds["generate"],
            "completions_per_s": args.batch_size / sum(seconds.values()),
            "achieved_tflops": {k: flops[k] / seconds[k] / 1e12 for k in flops},
            "flops_per_step": flops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=[*MODEL_SIZES, QWEN2_05B])
    parser.add_argument("--model", type=Path, help="A model on disk instead of a new one of --size: a Hugging Face "
                        "directory or a .gguf file (e.g. SmolLM2-135M-Instruct).")
    parser.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="Rollout engine (vllm: pip install "
                        "'tandem[vllm]').")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "no"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="Completions per step (PPO: prompts, one each).")
    parser.add_argument("--group", type=int, default=8, help="GRPO completions per prompt.")
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    peak = {name: matmul_peak_tflops(args.device, dtype, 8192 if args.device == "cuda" else 2048)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    task = get_task("sentiment")
    report = {"machine": machine_info(args.device), "settings": {**vars(args), "out": str(args.out),
                                                                 "model": str(args.model) if args.model else None},
              "matmul_peak_tflops": peak}
    with tempfile.TemporaryDirectory(prefix="tandem-rl-step-") as tmp:
        if args.model is not None:  # loaded by each run as tandem loads any model (a .gguf converted once, cached)
            from tandem.models.loading import load_tokenizer

            model_dir, tokenizer = args.model, load_tokenizer(args.model)
        else:
            vocab = MODEL_SIZES[args.size].vocab_size if args.size in MODEL_SIZES else 4096
            tokenizer = train_tokenizer(task.pretrain_corpus(2000), vocab_size=vocab)
            lm, _ = build_models(args.size, "llama", tokenizer)
            model_dir = Path(tmp) / "lm"
            lm.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        for kind in ("ppo", "grpo"):
            result = run(kind, args, model_dir, tokenizer, task, Path(tmp) / kind)
            result["mfu_vs_bf16_peak"] = {k: v / peak["bf16"] for k, v in result["achieved_tflops"].items()}
            report[kind] = result
            s = result["seconds_per_step"]
            print(f"{kind} ({args.engine}): {sum(s.values()):.2f} s/step = generate {s['generate']:.2f} + score "
                  f"{s['score']:.3f} + logprobs/advantages {s['logprobs_advantages']:.2f} + update {s['update']:.2f}"
                  f" + engine sync {s['engine_sync']:.3f} (set-up {result['set_up_s']:.1f} s); "
                  f"rollout {result['rollout_completion_tokens_per_s']:.0f} completion tok/s; "
                  f"MFU (bf16 peak {peak['bf16']:.2f} TFLOP/s): "
                  + ", ".join(f"{k} {v:.1%}" for k, v in result["mfu_vs_bf16_peak"].items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
