"""Decision Transformer (seed eq. 13) against behaviour cloning and the best behaviour policy in the data.

For each task: collect a random / medium / expert mixture with tandem's own PPO (`tandem collect`), train a
Decision Transformer and its behaviour-cloning twin (`tandem dt`), evaluate the DT at several target returns.
Scores are D4RL-normalised, 100 (R - R_random) / (R_best_behaviour - R_random). One thread:

    python benchmarks/agents_dt.py --out runs/bench-dt

Writes OUT/<env>/{metrics.json, returns.png, data/, model/}, OUT/summary.json and OUT/achieved_vs_target.png.

With --model (Reid et al. 2022, "Can Wikipedia help offline RL?") the script instead trains, on the same data, steps
and batches, a DT whose transformer is the pretrained decoder's first --model-layers layers and the same DT from
scratch (the same decoder architecture, randomly initialised), both at --lr. Each is evaluated at the data's best
return every --steps / --checkpoints steps; the report gives the best normalised return, the first checkpoint
reaching 90% of it (and of the better arm's best) and the wall time. The dataset is collected once into
OUT/<env>/data and reused by later runs (e.g. other --train-seeds):

    python benchmarks/agents_dt.py --tasks CartPole-v1 --model SmolLM2-135M-Instruct.Q4_1.gguf --model-layers 2 \
        --out runs/bench-dt-smollm2

Writes OUT/<env>/pretrained_vs_scratch_seed<S>.json and OUT/pretrained_vs_scratch.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tandem.lm_inside_agents.decision_transformer import (
    DecisionTransformer,
    evaluate_decision_transformer,
    pretrained_decision_transformer,
    shape_for,
    train_decision_transformer,
)
from tandem.lm_inside_agents.experiments.dt import DTConfig, run_dt
from tandem.lm_inside_agents.offline_collect import CollectConfig, collect_offline_dataset
from tandem.lm_inside_agents.offline_data import METADATA, OfflineDataset, load_offline_dataset, normalised_score

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
    parser.add_argument("--model", type=Path, help="pretrained causal LM (directory, .gguf, LoRA folder): compare its "
                        "layers as the DT's transformer against the same architecture from scratch")
    parser.add_argument("--model-layers", type=int, help="with --model: keep the first N decoder layers (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4, help="with --model: the peak learning rate of both arms")
    parser.add_argument("--checkpoints", type=int, default=5, help="with --model: evaluations during training")
    parser.add_argument("--train-seeds", type=int, nargs="+", help="with --model: training seeds (default: --seed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model is not None:
        compare_pretrained(args)
        return

    summary = {}
    started = time.perf_counter()
    for env_id in filter(None, args.tasks.split(",")):
        preset = TASKS.get(env_id, dict(ppo_steps=100_000, episodes=200))
        config = DTConfig(
            out=args.out / env_id, env_id=env_id, steps=args.steps, context=args.context, hidden=args.hidden,
            layers=args.layers, batch_size=args.batch_size, eval_episodes=args.eval_episodes, seed=args.seed,
            progress=False, **preset,
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


def offline_data(env_id: str, folder: Path, seed: int) -> OfflineDataset:
    """The task's random / medium / expert mixture: loaded from `folder` when collected before, else collected."""
    if (folder / METADATA).is_file():
        return load_offline_dataset(folder)
    return collect_offline_dataset(CollectConfig(out=folder, env_id=env_id, seed=seed, progress=False,
                                                 **TASKS.get(env_id, dict(ppo_steps=100_000, episodes=200))))


def train_with_checkpoints(model: DecisionTransformer, dataset: OfflineDataset, args, seed: int, target: float,
                           score) -> dict:
    """Train `model`, evaluating it at `target` every steps / checkpoints steps; the curve and the times."""
    curve, evaluating = [], 0.0

    def evaluate(step: int) -> None:
        nonlocal evaluating
        t0 = time.perf_counter()
        returns = evaluate_decision_transformer(model, dataset.metadata["env_id"], target, episodes=args.eval_episodes,
                                                num_envs=min(8, args.eval_episodes), seed=seed + 10_000)
        evaluating += time.perf_counter() - t0
        curve.append({"step": step, "mean_return": float(returns.mean()), "normalised": score(float(returns.mean()))})
        print(f"    step {step}: return {returns.mean():.1f} (normalised {curve[-1]['normalised']:.1f})", flush=True)

    started = time.perf_counter()
    losses = train_decision_transformer(model, dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                        seed=seed, progress=False, checkpoint_every=max(1, args.steps // args.checkpoints),
                                        at_checkpoint=evaluate)
    if not curve or curve[-1]["step"] != args.steps:
        evaluate(args.steps)
    seconds = time.perf_counter() - started
    return {"curve": curve, "final_loss": float(sum(losses[-20:]) / len(losses[-20:])), "seconds": seconds,
            "train_seconds": seconds - evaluating, "eval_seconds": evaluating}


def first_step_reaching(curve: list[dict], threshold: float) -> int | None:
    """The first checkpoint whose normalised return is at least `threshold` (None: never)."""
    return next((row["step"] for row in curve if row["normalised"] >= threshold), None)


def compare_pretrained(args) -> None:
    """Pretrained layers against the same architecture from scratch, on the same data, steps and batches."""
    report = {"_settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}}
    started = time.perf_counter()
    for env_id in filter(None, args.tasks.split(",")):
        out = args.out / env_id
        dataset = offline_data(env_id, out / "data", args.seed)
        behaviour = dataset.policy_returns()
        random_return, best_return = behaviour["random"], max(behaviour.values())
        target = float(dataset.episode_returns().max())  # the headline DT target: the best return in the data

        def score(ret: float, random_return: float = random_return, best_return: float = best_return) -> float:
            return normalised_score(ret, random_return, best_return)

        rows = {}
        for seed in args.train_seeds or [args.seed]:
            arms = {}
            torch.manual_seed(seed)
            pretrained = pretrained_decision_transformer(shape_for(dataset, context=args.context), args.model,
                                                         layers=args.model_layers)
            torch.manual_seed(seed)
            scratch = DecisionTransformer(pretrained.shape)  # the same decoder config, randomly initialised
            # the arms differ only in the transformer: the DT's own embeddings and head start equal
            scratch.load_state_dict({k: v for k, v in pretrained.state_dict().items()
                                     if not k.startswith("transformer.")}, strict=False)
            for name, model in (("scratch", scratch), ("pretrained", pretrained)):
                print(f"  {env_id} seed {seed}: {name}", flush=True)
                arms[name] = train_with_checkpoints(model, dataset, args, seed, target, score)
            better = max(max(row["normalised"] for row in arm["curve"]) for arm in arms.values())
            for arm in arms.values():
                best = max(row["normalised"] for row in arm["curve"])
                arm.update(best_normalised=best, final_normalised=arm["curve"][-1]["normalised"],
                           steps_to_90pct_own_best=first_step_reaching(arm["curve"], 0.9 * best),
                           steps_to_90pct_better_best=first_step_reaching(arm["curve"], 0.9 * better))
            shape = pretrained.shape
            rows[seed] = {"arms": arms, "hidden": shape.hidden, "layers": shape.layers, "heads": shape.heads}
            (out / f"pretrained_vs_scratch_seed{seed}.json").write_text(json.dumps(rows[seed], indent=2))
        report[env_id] = {"random_return": random_return, "best_behaviour_return": best_return, "target": target,
                          "behaviour_returns": behaviour, "transitions": len(dataset), "seeds": rows}
        print_comparison(env_id, rows)
    report["_wall_seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pretrained_vs_scratch.json").write_text(json.dumps(report, indent=2))
    print(f"wall time {report['_wall_seconds']:.0f}s; results in {args.out / 'pretrained_vs_scratch.json'}")


def print_comparison(env_id: str, rows: dict) -> None:
    print(f"\n{env_id}\n| seed | DT transformer | normalised return at the end (best) | steps to 90% of its best | "
          "steps to 90% of the better arm's best | train s | eval s |\n|---|---|---|---|---|---|---|")
    for seed, row in rows.items():
        for name, arm in row["arms"].items():
            print(f"| {seed} | {name} | {arm['final_normalised']:.1f} ({arm['best_normalised']:.1f}) | "
                  f"{arm['steps_to_90pct_own_best']} | {arm['steps_to_90pct_better_best'] or 'not reached'} | "
                  f"{arm['train_seconds']:.0f} | {arm['eval_seconds']:.0f} |")


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
