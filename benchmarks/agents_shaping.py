"""LLM reward shaping (seed eq. 12): environment steps until DQN's greedy policy reaches 90% success on a sparse
task, with rewards shaped by F = gamma * Phi(s') - Phi(s) (Phi = the LM's progress rating) and without.

Raters: ``oracle`` (NOT an LM: the normalised optimal value V*/max V*, a stand-in for a well-calibrated LM) and
``demo`` (a tiny tandem model fine-tuned on demonstrations, rating progress as a probability-weighted digit 0-9).

    python benchmarks/agents_shaping.py --out runs/bench-shaping
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from agents_exploration import run_condition, write_results

from tandem.lm_inside_agents.backends import oracle_backend, train_demo_backend
from tandem.lm_inside_agents.experiments.explore import task_env_factory
from tandem.lm_inside_agents.dqn import DQNConfig
from tandem.lm_inside_agents.shaping import PotentialShaping, progress_potential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-shaping"))
    parser.add_argument("--env", default="frozenlake8x8")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=30_000)
    parser.add_argument("--raters", nargs="+", default=["oracle", "demo"], choices=["oracle", "demo"])
    parser.add_argument("--demo-model", type=Path, default=None, help="reuse a demo model directory (HF) instead of training")
    parser.add_argument("--demo-episodes", type=int, default=200)
    parser.add_argument("--demo-steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    make_env = task_env_factory(args.env)
    config = DQNConfig(total_steps=args.max_steps, eval_episodes=1, target_success=0.9)
    seeds = list(range(args.seeds))
    conditions = [run_condition("DQN (unshaped)", make_env, make_env, lambda seed: None, seeds, config)]
    for rater in args.raters:
        if rater == "oracle":
            backend = oracle_backend(make_env(), gamma=config.gamma)
        elif args.demo_model is not None:
            from tandem.lm_inside_agents.backends import HFBackend

            backend = HFBackend(args.demo_model)
        else:
            backend = train_demo_backend(make_env(), args.out / "demo_lm", n_episodes=args.demo_episodes,
                                         steps=args.demo_steps, progress_bar=False)
        potential = progress_potential(backend)

        def shaped(potential=potential):
            return PotentialShaping(make_env(), potential, gamma=config.gamma)

        conditions.append(run_condition(f"DQN + {rater} shaping", shaped, make_env, lambda seed: None, seeds, config))
    extra = {"env": args.env, "config": config.model_dump(mode="json"), "seconds": time.perf_counter() - started}
    write_results(args.out, conditions, extra, args.max_steps, f"eq. 12 shaping, {args.env}")
    print(f"\nwall time {extra['seconds']:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
