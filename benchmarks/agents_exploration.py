"""LLM-guided exploration (seed eq. 11): environment steps until DQN's greedy policy reaches 90% success,
with and without the language model's suggestions, over several seeds, on a sparse-reward task.

Language models compared: ``oracle`` (NOT an LM: an optimal tabular policy answering at random with probability
--noise, a stand-in for a competent LM), ``demo`` (a tiny tandem model fine-tuned on expert demonstrations rendered
as text, `tandem.lm_inside_agents.backends.train_demo_backend`), ``pretrained`` (--lm-model, e.g. SmolLM2, zero-shot:
the prompt as written) and ``pretrained-demo`` (that model warm-started on the same demonstrations). Each LM's own
greedy action agreement with the expert on 50 fresh episodes is reported. Runs that never reach the target count as censored at
--max-steps. Writes results.json and steps_to_target.png / learning_curves.png under --out.

    python benchmarks/agents_exploration.py --out runs/bench-exploration
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from tandem.lm_inside_agents.backends import (  # noqa: E402
    HFBackend,
    action_agreement,
    expert_episodes,
    oracle_backend,
    train_demo_backend,
)
from tandem.lm_inside_agents.experiments.explore import plot_curves, run_summary, task_env_factory  # noqa: E402
from tandem.lm_inside_agents.dqn import DQNConfig, same_step_vector_env, train_dqn  # noqa: E402


def run_condition(label, make_train_env, make_eval_env, backend_for_seed, seeds, config: DQNConfig) -> dict:
    """One DQN run per seed; the summary per run and the censored steps-to-target."""
    runs = []
    for seed in seeds:
        seed_config = config.model_copy(update={"seed": seed})
        result = train_dqn(seed_config, same_step_vector_env(make_train_env, config.n_envs), make_eval_env(),
                           backend=backend_for_seed(seed), progress=False)
        runs.append({**run_summary(label, result), "seed": seed})
        print(f"  {label} seed {seed}: steps to target {result.steps_to_target} ({result.seconds:.1f}s, "
              f"{result.env_steps_per_s:.0f} env steps/s, {result.updates / max(result.seconds, 1e-9):.0f} updates/s)", flush=True)
    steps = [r["steps_to_target"] if r["steps_to_target"] is not None else config.total_steps for r in runs]
    return {
        "label": label, "runs": runs, "steps": steps,
        "reached": sum(r["steps_to_target"] is not None for r in runs),
        "median_steps": statistics.median(steps), "mean_steps": statistics.mean(steps),
        "env_steps_per_s": statistics.mean(r["env_steps_per_s"] for r in runs),
        "updates_per_s": statistics.mean(r["updates_per_s"] for r in runs),
    }


def plot_steps(conditions: list[dict], path: Path, cap: int, title: str) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for k, condition in enumerate(conditions):
        axis.scatter([k] * len(condition["steps"]), condition["steps"], alpha=0.6)
        axis.hlines(condition["median_steps"], k - 0.25, k + 0.25, color="black")
    axis.axhline(cap, linestyle="--", color="grey", linewidth=1, label=f"cap {cap} (not reached)")
    axis.set_xticks(range(len(conditions)), [c["label"] for c in conditions], fontsize=7)
    axis.set_ylabel("env steps to 90% greedy success")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(out: Path, conditions: list[dict], extra: dict, cap: int, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({**extra, "conditions": conditions}, indent=2))
    plot_steps(conditions, out / "steps_to_target.png", cap, title)
    plot_curves([{**run, "label": f"{c['label']} s{run['seed']}"} for c in conditions for run in c["runs"]],
                out / "learning_curves.png", title)
    print("\n| condition | reached 90% | median env steps | mean env steps | env steps/s | updates/s |")
    print("|---|---|---|---|---|---|")
    for c in conditions:
        print(f"| {c['label']} | {c['reached']}/{len(c['runs'])} | {c['median_steps']:.0f} | {c['mean_steps']:.0f} | "
              f"{c['env_steps_per_s']:.0f} | {c['updates_per_s']:.0f} |")


def language_model(lm: str, args, make_env, extra: dict):
    """The backend of `lm` (demo, pretrained, pretrained-demo), its training time and its agreement with the expert."""
    t0 = time.perf_counter()
    if lm == "demo":
        backend = train_demo_backend(make_env(), args.out / "demo_lm", n_episodes=args.demo_episodes,
                                     steps=args.demo_steps, progress_bar=False)
        label = "DQN + demo tiny LM"
    elif args.lm_model is None:
        raise SystemExit(f"--lms {lm} needs --lm-model")
    elif lm == "pretrained":
        backend, label = HFBackend(args.lm_model), f"DQN + {args.lm_model.name} zero-shot"
    else:
        backend = train_demo_backend(make_env(), args.out / "pretrained_demo_lm", n_episodes=args.demo_episodes,
                                     steps=args.pretrained_demo_steps, lr=args.pretrained_demo_lr, batch_size=16,
                                     progress_bar=False, base_model=args.lm_model)
        label = f"DQN + {args.lm_model.name} warm-started"
    agreement = action_agreement(backend, make_env(), expert_episodes(make_env(), 50, seed=10_000))
    extra[f"{lm}_lm"] = {"train_seconds": time.perf_counter() - t0, "expert_agreement": agreement}
    print(f"  {label}: ready in {extra[f'{lm}_lm']['train_seconds']:.0f}s, agrees with the expert on {agreement:.2f}")
    return backend, label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-exploration"))
    parser.add_argument("--env", default="frozenlake8x8")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=30_000)
    parser.add_argument("--noise", type=float, default=0.2, help="oracle stand-in: probability of a random answer")
    parser.add_argument("--lms", nargs="+", default=["none", "oracle", "demo"],
                        choices=["none", "oracle", "demo", "pretrained", "pretrained-demo"])
    parser.add_argument("--lm-model", type=Path, help="pretrained / pretrained-demo: a HF directory, .gguf or LoRA folder")
    parser.add_argument("--pretrained-demo-steps", type=int, default=100)
    parser.add_argument("--pretrained-demo-lr", type=float, default=5e-5)
    parser.add_argument("--demo-episodes", type=int, default=200)
    parser.add_argument("--demo-steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    make_env = task_env_factory(args.env)
    config = DQNConfig(total_steps=args.max_steps, eval_episodes=1, target_success=0.9)
    seeds = list(range(args.seeds))
    extra: dict = {"env": args.env, "config": config.model_dump(mode="json"), "noise": args.noise}
    conditions = []
    for lm in args.lms:
        if lm == "none":
            conditions.append(run_condition("DQN", make_env, make_env, lambda seed: None, seeds, config))
        elif lm == "oracle":
            label = f"DQN + oracle (noise {args.noise})"
            conditions.append(run_condition(label, make_env, make_env,
                                            lambda seed: oracle_backend(make_env(), args.noise, config.gamma, seed), seeds, config))
        else:
            backend, label = language_model(lm, args, make_env, extra)
            conditions.append(run_condition(label, make_env, make_env, lambda seed: backend, seeds, config))
    extra["seconds"] = time.perf_counter() - started
    write_results(args.out, conditions, extra, args.max_steps, f"eq. 11 exploration, {args.env}")
    print(f"\nwall time {extra['seconds']:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
