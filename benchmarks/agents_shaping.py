"""LLM reward shaping (seed eq. 12): environment steps until DQN's greedy policy reaches 90% success on a sparse
task, with rewards shaped by F = gamma * Phi(s') - Phi(s) (Phi = the LM's progress rating) and without.

Raters: ``oracle`` (NOT an LM: the normalised optimal value V*/max V*, a stand-in for a well-calibrated LM),
``demo`` (a tiny tandem model fine-tuned on demonstrations, rating progress as a probability-weighted digit 0-9),
``pretrained`` (--lm-model, e.g. SmolLM2, zero-shot: the backend's progress prompt as written,
`tandem.lm_inside_agents.prompts.progress_prompt`), ``pretrained-demo`` (--pretrained-demo-model, that model
already warm-started on demonstrations, e.g. by `agents_exploration.py --lms pretrained-demo`; not trained here) and
``constant`` (a control, not an LM: Phi = --constant-phi on every state, so F is a cost (gamma - 1) Phi per step and
-Phi on entering a terminal state; an LM rater's gain beyond this control is its ranking of the states).

Each rater's Phi is cached per state and shared by all vector envs and seeds, so each distinct state is rated once
(Phi(terminal) = 0); the report gives how many states were rated. Ng et al. (1999)'s invariance is checked on the
true tabular model: value iteration with and without the rater's Phi (over every state) must give the same optimal
actions; the Spearman correlation of Phi with V* says how well the rater ranks progress. Runs that never reach the
target count as censored at --max-steps.

    python benchmarks/agents_shaping.py --out runs/bench-shaping
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from agents_exploration import run_condition, write_results
from scipy.stats import spearmanr

from tandem.lm_inside_agents.backends import FunctionBackend, HFBackend, oracle_backend, train_demo_backend
from tandem.lm_inside_agents.dqn import DQNConfig
from tandem.lm_inside_agents.experiments.explore import task_env_factory
from tandem.lm_inside_agents.render import render_state
from tandem.lm_inside_agents.shaping import (
    PotentialShaping,
    non_terminal_states,
    policy_invariance,
    progress_potential,
    q_value_iteration,
)


def rater_backend(rater: str, args, make_env, gamma: float):
    """The backend rating progress for `rater`, and its label."""
    if rater == "oracle":
        return oracle_backend(make_env(), gamma=gamma), "oracle"
    if rater == "constant":
        return FunctionBackend(rate=lambda state, goal: args.constant_phi), f"constant Phi = {args.constant_phi:g}"
    if rater == "demo":
        if args.demo_model is not None:
            return HFBackend(args.demo_model), "demo LM"
        return train_demo_backend(make_env(), args.out / "demo_lm", n_episodes=args.demo_episodes,
                                  steps=args.demo_steps, progress_bar=False), "demo LM"
    if rater == "pretrained":
        if args.lm_model is None:
            raise SystemExit("--raters pretrained needs --lm-model")
        return HFBackend(args.lm_model), f"{args.lm_model.stem} zero-shot"
    if args.pretrained_demo_model is None:
        raise SystemExit("--raters pretrained-demo needs --pretrained-demo-model (a warm-started model directory)")
    return HFBackend(args.pretrained_demo_model), f"{args.pretrained_demo_model.stem} warm-started"


def invariance_check(make_env, cache: dict, potential, gamma: float) -> dict:
    """`policy_invariance` on the env's tabular model with Phi(s) from the shared `cache` (rating the states the
    runs never visited), 0 on terminal states; the spread of Phi and its rank correlation with V*."""
    env = make_env()
    model = env.unwrapped.P
    live = set(non_terminal_states(model))
    phi = np.zeros(len(model))
    for s in live:
        key = render_state(env, s)
        if key not in cache:
            cache[key] = float(potential(key))
        phi[s] = cache[key]
    live = sorted(live)
    rated, values = phi[live], q_value_iteration(model, gamma).max(axis=1)[live]
    spearman = float(spearmanr(rated, values).statistic) if np.ptp(rated) > 0 else None  # undefined for a constant
    return {**policy_invariance(model, phi, gamma), "phi_min": float(rated.min()), "phi_max": float(rated.max()),
            "phi_mean": float(rated.mean()), "spearman_phi_v_star": spearman}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-shaping"))
    parser.add_argument("--env", default="frozenlake8x8")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=30_000)
    parser.add_argument("--raters", nargs="+", default=["oracle", "demo"],
                        choices=["oracle", "demo", "pretrained", "pretrained-demo", "constant"])
    parser.add_argument("--constant-phi", type=float, default=0.42, help="constant: the potential of every state")
    parser.add_argument("--lm-model", type=Path, help="pretrained: a HF directory, .gguf or LoRA folder (e.g. SmolLM2)")
    parser.add_argument("--pretrained-demo-model", type=Path,
                        help="pretrained-demo: a pretrained model already fine-tuned on demonstrations (a directory)")
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
    raters = {}
    for rater in args.raters:
        t0 = time.perf_counter()
        backend, label = rater_backend(rater, args, make_env, config.gamma)
        rate = progress_potential(backend)
        queries = []  # the states the backend was asked about, in order

        def potential(state_text, rate=rate, queries=queries):
            queries.append(state_text)
            return rate(state_text)

        cache: dict = {}

        def shaped(potential=potential, cache=cache):
            return PotentialShaping(make_env(), potential, gamma=config.gamma, cache=cache)

        conditions.append(run_condition(f"DQN + {label} shaping", shaped, make_env, lambda seed: None, seeds, config))
        during_training = len(queries)
        check = invariance_check(make_env, cache, potential, config.gamma)
        raters[rater] = {"label": label, "lm_queries_during_training": during_training, "lm_queries": len(queries),
                         "distinct_states_rated": len(cache), "invariance": check,
                         "seconds": time.perf_counter() - t0}
        print(f"  {label}: {during_training} LM queries in training (one per distinct state), "
              f"{len(queries)} with the check's unvisited states; optimal actions unchanged in {check['same_optimal_actions']}/"
              f"{check['states']} states, max |Q*_shaped - (Q* - Phi)| = {check['max_q_error']:.1e}; "
              f"Phi in [{check['phi_min']:.3f}, {check['phi_max']:.3f}], Spearman with V* {check['spearman_phi_v_star']}",
              flush=True)
    extra = {"env": args.env, "config": config.model_dump(mode="json"), "raters": raters,
             "seconds": time.perf_counter() - started}
    write_results(args.out, conditions, extra, args.max_steps, f"eq. 12 shaping, {args.env}")
    print(json.dumps(raters, indent=2))
    print(f"\nwall time {extra['seconds']:.0f}s; results in {args.out}")


if __name__ == "__main__":
    main()
