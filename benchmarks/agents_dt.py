"""Decision Transformer (seed eq. 13) against behaviour cloning and the best behaviour policy in the data.

For each task: collect a random / medium / expert mixture with tandem's own PPO (`tandem collect`), train a
Decision Transformer and its behaviour-cloning twin (`tandem dt`), evaluate the DT at several target returns.
Scores are D4RL-normalised, 100 (R - R_random) / (R_best_behaviour - R_random). One thread:

    python benchmarks/agents_dt.py --out runs/bench-dt

Writes OUT/<env>/{metrics.json, returns.png, data/, model/}, OUT/summary.json and OUT/achieved_vs_target.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tandem.lm_inside_agents.experiments.dt import DTConfig, run_dt

# Per task: the PPO budget that gives an expert, and how many episodes to collect.
TASKS = {
    "CartPole-v1": dict(ppo_steps=100_000, episodes=300),
    "Pendulum-v1": dict(ppo_steps=100_000, episodes=150),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-dt"))
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated Gymnasium ids")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of DT and of BC")
    parser.add_argument("--context", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    summary = {}
    started = time.perf_counter()
    for env_id in filter(None, args.tasks.split(",")):
        preset = TASKS.get(env_id, dict(ppo_steps=100_000, episodes=200))
        config = DTConfig(
            out=args.out / env_id, env_id=env_id, steps=args.steps, context=args.context, hidden=args.hidden,
            layers=args.layers, eval_episodes=args.eval_episodes, seed=args.seed, progress=False, **preset,
        )
        t0 = time.perf_counter()
        metrics = run_dt(config)
        summary[env_id] = {
            "random_return": metrics["random_return"],
            "best_behaviour_return": metrics["best_behaviour_return"],
            "behaviour_returns": metrics["dataset"]["behaviour_returns"],
            "dt_target": metrics["dt"]["target"],
            "dt_return": metrics["dt"]["mean_return"],
            "dt_normalised": metrics["dt"]["normalised"],
            "bc_return": metrics["bc"]["mean_return"],
            "bc_normalised": metrics["bc"]["normalised"],
            "achieved_vs_target": [(row["target"], row["mean_return"]) for row in metrics["dt"]["targets"]],
            "transitions": metrics["dataset"]["transitions"],
            "seconds": time.perf_counter() - t0,
        }
        print(json.dumps({env_id: summary[env_id]}, indent=2), flush=True)
    summary["_wall_seconds"] = time.perf_counter() - started
    summary["_settings"] = vars(args) | {"out": str(args.out)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(summary, args.out / "achieved_vs_target.png")


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [k for k in summary if not k.startswith("_")]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, env_id in zip(axes[0], tasks):
        row = summary[env_id]
        targets, achieved = zip(*row["achieved_vs_target"])
        ax.plot(targets, achieved, "o-", label="Decision Transformer")
        ax.plot(targets, targets, "k:", label="achieved = target")
        ax.axhline(row["bc_return"], color="tab:brown", label="behaviour cloning")
        ax.axhline(row["best_behaviour_return"], color="tab:green", linestyle="--", label="best behaviour policy")
        ax.axhline(row["random_return"], color="tab:red", linestyle="--", label="random policy")
        ax.set(title=env_id, xlabel="target return", ylabel="achieved return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
