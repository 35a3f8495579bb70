"""Agent throughput: environment steps per second with Gymnasium vector envs (sync vs async), PPO iterations
and optimizer steps per second (`tandem.lm_inside_agents.ppo`), and Decision Transformer updates per second.

    python benchmarks/agents_throughput.py --out runs/bench-throughput

Writes OUT/throughput.json and OUT/throughput.png. Torch runs on one thread (--threads); async vector envs
use one process per env on top of that, so their numbers depend on how many cores are free.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tandem.lm_inside_agents.decision_transformer import DecisionTransformer, shape_for, updates_per_second
from tandem.lm_inside_agents.episodes import random_actor, run_episodes, vector_env_by_id
from tandem.lm_inside_agents.offline_data import episodes_to_dataset, space_metadata
from tandem.lm_inside_agents.ppo import AgentPPOConfig, MLPActorCritic, train_ppo


def env_steps_per_second(env_id: str, num_envs: int, vectorization: str, steps: int, seed: int = 0) -> float:
    """Random-action vector env steps (summed over envs) per second, after reset."""
    envs = vector_env_by_id(env_id, num_envs, vectorization)
    try:
        act = random_actor(envs, seed)
        obs, _ = envs.reset(seed=seed)
        envs.step(act(obs))  # warm-up (async workers)
        started = time.perf_counter()
        for _ in range(max(1, steps // num_envs)):
            obs, *_ = envs.step(act(obs))
        return max(1, steps // num_envs) * num_envs / (time.perf_counter() - started)
    finally:
        envs.close()


def ppo_throughput(env_id: str, num_envs: int, vectorization: str, iterations: int, seed: int = 0) -> dict:
    envs = vector_env_by_id(env_id, num_envs, vectorization)
    try:
        config = AgentPPOConfig(total_steps=iterations * num_envs * 128, num_steps=128, seed=seed, progress=False)
        torch.manual_seed(seed)
        started = time.perf_counter()
        history = train_ppo(envs, MLPActorCritic.for_env(envs), config)
        wall = time.perf_counter() - started
    finally:
        envs.close()
    records = history.records[1:] or history.records  # first iteration includes warm-up
    update_seconds = sum(r["update_seconds"] for r in records)
    return {
        "iterations_per_s": len(history.records) / wall,
        "env_steps_per_s_training": history.records[-1]["env_steps"] / wall,
        "rollout_env_steps_per_s": sum(num_envs * 128 for _ in records) / sum(r["rollout_seconds"] for r in records),
        "optimizer_steps_per_s": sum(r["optimizer_steps"] for r in records) / update_seconds,
        "batch": num_envs * 128,
        "minibatch": num_envs * 128 // config.num_minibatches,
    }


def dt_throughput(contexts: list[int], hiddens: list[int], batch_size: int, steps: int) -> list[dict]:
    envs = vector_env_by_id("CartPole-v1", 4)
    episodes = run_episodes(envs, random_actor(envs, 0), 200, seed=0, progress=False)
    metadata = space_metadata(envs, "CartPole-v1") | {"policies": [{"name": "random", "mean_return": 0.0}]}
    envs.close()
    dataset = episodes_to_dataset(episodes, [0] * len(episodes), metadata)
    rows = []
    for context in contexts:
        for hidden in hiddens:
            model = DecisionTransformer(shape_for(dataset, context=context, hidden=hidden, layers=3, heads=1))
            rate = updates_per_second(model, dataset, batch_size=batch_size, steps=steps)
            rows.append({"context": context, "hidden": hidden, "layers": 3, "batch": batch_size, "updates_per_s": rate,
                         "tokens_per_s": rate * batch_size * 3 * context,
                         "parameters": sum(p.numel() for p in model.parameters())})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-throughput"))
    parser.add_argument("--envs", default="CartPole-v1,Pendulum-v1")
    parser.add_argument("--num-envs", default="1,8")
    parser.add_argument("--env-steps", type=int, default=40_000)
    parser.add_argument("--ppo-iterations", type=int, default=6)
    parser.add_argument("--dt-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts = [int(n) for n in args.num_envs.split(",")]
    results: dict = {"env_steps_per_s": [], "ppo": [], "dt": []}
    for env_id in args.envs.split(","):
        for vectorization in ("sync", "async"):
            for n in counts:
                rate = env_steps_per_second(env_id, n, vectorization, args.env_steps)
                results["env_steps_per_s"].append({"env": env_id, "vectorization": vectorization, "num_envs": n,
                                                   "steps_per_s": rate})
                print(results["env_steps_per_s"][-1], flush=True)
        for vectorization in ("sync", "async"):
            row = {"env": env_id, "vectorization": vectorization, "num_envs": max(counts),
                   **ppo_throughput(env_id, max(counts), vectorization, args.ppo_iterations)}
            results["ppo"].append(row)
            print(row, flush=True)
    results["dt"] = dt_throughput([10, 20], [64, 128], batch_size=64, steps=args.dt_steps)
    results["wall_seconds"] = time.perf_counter() - started
    results["threads"] = args.threads
    (args.out / "throughput.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "throughput.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rows = results["env_steps_per_s"]
    labels = [f"{r['env'].split('-')[0]}\n{r['vectorization']} x{r['num_envs']}" for r in rows]
    left.bar(np.arange(len(rows)), [r["steps_per_s"] for r in rows])
    left.set_xticks(np.arange(len(rows)), labels, fontsize=7)
    left.set(ylabel="environment steps / s", title="random-action vector env throughput")
    dt = results["dt"]
    right.bar(np.arange(len(dt)), [r["updates_per_s"] for r in dt])
    right.set_xticks(np.arange(len(dt)), [f"K={r['context']}\nh={r['hidden']}" for r in dt], fontsize=8)
    right.set(ylabel="updates / s (batch 64)", title="Decision Transformer training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
