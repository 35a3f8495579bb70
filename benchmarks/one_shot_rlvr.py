"""One-shot RLVR (Wang et al. 2025) in miniature on the built-in `arithmetic` task.

1. A full-data GRPO run from the SFT model (several epochs over `--n-prompts` prompts) writes each
   example's training reward per epoch (`example_rewards.jsonl`).
2. The examples with the highest standard deviation of per-epoch accuracy are picked.
3. GRPO on 1 example and on `--few` examples (duplicated to fill each batch, entropy bonus, small k3 KL),
   evaluated on held-out questions every `--eval-every` steps, against the full-data run's curve.

    python benchmarks/one_shot_rlvr.py --sft runs/bench/rlvr2/sft/model --out runs/bench/one-shot

Writes `results.json`, `results.md` and `curves.png` (held-out accuracy, and training accuracy on the
picked example) to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tandem.trainers.grpo import GRPOConfig, run_grpo
from tandem.trainers.one_shot import OneShotConfig, example_accuracy_history, historical_variance_ranking, run_one_shot


def curves(run_dir: Path) -> dict[str, list]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"eval": [(r["step"], r["eval/gold_reward"]) for r in records if "eval/gold_reward" in r],
            "train": [(r["step"], r["train/reward"]) for r in records if "train/reward" in r]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", type=Path, default=Path("runs/bench/rlvr2/sft/model"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/one-shot"))
    parser.add_argument("--task", default="arithmetic:digits=1:operations=+-*:eval_fraction=0.3:wrong_fraction=0.3")
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--full-steps", type=int, default=40)
    parser.add_argument("--shot-steps", type=int, default=60)
    parser.add_argument("--few", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--samples-per-prompt", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--n-eval", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = dict(model=args.sft, task=args.task, n_prompts=args.n_prompts, batch_size=args.batch_size,
                  samples_per_prompt=args.samples_per_prompt, micro_batch_size=64, lr=args.lr,
                  temperature=args.temperature, eval_every=args.eval_every, n_eval=args.n_eval, log_every=1)
    started = time.perf_counter()
    full_dir = args.out / "full"
    if not (full_dir / "model").exists():
        run_grpo(GRPOConfig(out=full_dir, max_steps=args.full_steps, entropy_coef=0.001, kl_coef=0.001, **common))
    ranking = historical_variance_ranking(example_accuracy_history(full_dir))
    runs = {"full data": curves(full_dir)}
    for label, n in (("1 example", 1), (f"{args.few} examples", args.few)):
        out = args.out / f"shot-{n}"
        if not (out / "model").exists():
            run_one_shot(OneShotConfig(out=out, history=full_dir, n_examples=n, max_steps=args.shot_steps, **common))
        runs[label] = curves(out)
    results = {"task": args.task, "picked": ranking[: args.few], "runs": runs, "seconds": time.perf_counter() - started}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [f"One-shot RLVR on `{args.task}`: held-out exact match (greedy, {args.n_eval} questions) by GRPO step", "",
             "| training set | " + " | ".join(f"step {s}" for s, _ in runs["1 example"]["eval"]) + " |",
             "|---|" + "---|" * len(runs["1 example"]["eval"])]
    for label, run in runs.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for _, v in run["eval"]) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, run in runs.items():
        left.plot(*zip(*run["eval"]), marker="o", label=label)
        steps, rewards = zip(*run["train"])
        window = 5
        smooth = [sum(rewards[max(0, i - window + 1): i + 1]) / len(rewards[max(0, i - window + 1): i + 1])
                  for i in range(len(rewards))]
        right.plot(steps, smooth, label=label)
    left.set(xlabel="GRPO step", ylabel="held-out exact match", title="held-out accuracy")
    right.set(xlabel="GRPO step", ylabel="training reward (5-step mean)", title="training accuracy on its own prompts")
    left.legend()
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=120)


if __name__ == "__main__":
    main()
