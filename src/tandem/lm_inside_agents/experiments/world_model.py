"""The run behind `tandem world-model`: collect text transitions, train a tiny LM world model (or fine-tune a
pretrained one, `--model`), measure it, then plan and learn Dyna-style in it (Hao et al. 2023; Dyna, Sutton 1990).
Writes `metrics.json` and `world_model.png`.

Two kinds of world: a Gymnasium toy-text env (FrozenLake on random maps, Taxi), whose true simulator can be reset
to any state, so planning and Dyna in the LM are compared with the same on the true model; or an agent's text env
(``babyai:GoToObj``: the observations a language agent reads), where the world model is measured and a policy is
then trained inside it with ``tandem agent-rl --env worldmodel:RUN``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, field_validator

from tandem.lm_inside_agents.experiments.reports import write_json
from tandem.lm_inside_agents.planning import EnvModel, model_accuracy, plan_episode, q_learning
from tandem.lm_inside_agents.render import action_names
from tandem.lm_inside_agents.world_model import (
    WorldModelTrainConfig,
    TextTransition,
    collect_transitions,
    evaluate_world_model,
    frozen_lake_maps,
    load_world_model,
    map_env_factory,
    split_transitions,
    train_world_model,
)
from tandem.generation.engines import EngineOptions
from tandem.plotting import headless_pyplot


class WorldModelConfig(WorldModelTrainConfig, EngineOptions):
    """Collect text transitions, train a tiny LM world model or fine-tune `--model`, measure it, then plan and learn
    (Dyna) in it."""

    env: str = Field("FrozenLake-v1", description="Gymnasium toy-text env: FrozenLake-v1 (deterministic) or Taxi-v4; or an agent text env such as babyai:GoToObj (its world as the language agent reads it; no planning or Dyna there: its true simulator cannot be reset to a text state).")
    map_size: int = Field(4, ge=3, le=12, description="FrozenLake: side of the random maps.")
    n_maps: int = Field(40, ge=1, description="FrozenLake: distinct random maps the transitions come from.")
    episodes: int = Field(400, ge=1, description="Uniformly random episodes collected for transitions.")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction of distinct transitions held out.")
    planner: Literal["tree", "shooting"] = Field("tree", description="Planner: breadth-limited tree search or random-shooting MPC.")
    horizon: int = Field(8, ge=1, description="Planning horizon in steps.")
    n_sequences: int = Field(64, ge=1, description="Random-shooting: action sequences per decision.")
    max_nodes: int = Field(2000, ge=1, description="Tree search: most states expanded per decision (a world model that writes states no map has makes the tree grow with every mistake; this bounds its decoding).")
    plan_episodes: int = Field(20, ge=0, description="Real episodes acted by planning in each model (true simulator, LM).")
    dyna_real_steps: int = Field(2000, ge=0, description="Real steps of Q-learning / Dyna per seed (0: skip Dyna).")
    dyna_planning_steps: int = Field(10, ge=1, description="Imagined updates per real step in Dyna.")
    dyna_seeds: int = Field(3, ge=1, description="Seeds of the Dyna vs Q-learning comparison.")
    dyna_optimism: float = Field(0.0, ge=0, description="Initial value of every Q(s, a) in the Dyna comparison (optimistic initial values, Sutton & Barto 2018 sec. 2.6): 0 leaves exploration to epsilon-greedy, which on 8x8 maps finds no goal in 5,000 real steps even with the true simulator; 1 (the goal's reward) draws every variant to the pairs it has not tried.")
    trained: Path | None = Field(None, description="A world model an earlier run trained (its run directory, or the model directory): measured, planned and run Dyna in without training again. The transitions and maps are collected as that run did: give it the same --env, --map-size, --n-maps, --episodes and --seed.")

    @field_validator("env")
    @classmethod
    def _known_world(cls, value: str) -> str:
        if is_toy_text(value):
            return value
        kind = value.partition(":")[0]
        gym_id = kind in gym.registry or re.search(r"-v\d+$", kind)  # another Gymnasium id: no text renderer fits
        if gym_id or not re.fullmatch(r"[a-z][\w.-]*", kind) or kind in ("gym", "worldmodel", "task", "tools"):
            raise ValueError(f"{value!r}: a world model learns a registered FrozenLake or Taxi version, or an agent env "
                             "with named actions (e.g. babyai:GoToObj)")
        return value  # an agent env spec: built (and its kind checked) by the collector that reads it


def is_toy_text(env: str) -> bool:
    """A registered FrozenLake or Taxi id: planning on the true simulator resets it to any state (`EnvModel`)."""
    return (env.startswith("FrozenLake") or env.startswith("Taxi")) and env in gym.registry


def agent_env_spec(config: WorldModelConfig) -> str:
    """The `tandem agent-rl` env whose observations this world model writes (a toy-text run: the same world)."""
    if not is_toy_text(config.env):
        return config.env
    return f"frozenlake:size={config.map_size}" if config.env.startswith("FrozenLake") else config.env


def _plan_comparison(config: WorldModelConfig, make_env, world_model) -> dict:
    options = {"horizon": config.horizon}
    if config.planner == "shooting":
        options["n_sequences"] = config.n_sequences
    else:
        options["max_nodes"] = config.max_nodes
    results = {"true_simulator": [], "lm_world_model": []}
    for episode in range(config.plan_episodes):
        env = make_env(episode)  # the maps the transitions came from, including their held-out transitions
        for name, model in (("true_simulator", EnvModel(env)), ("lm_world_model", world_model)):
            outcome = plan_episode(env, model, config.planner, seed=config.seed + episode, **options)
            results[name].append(outcome)
        env.close()
    return {
        name: {"success_rate": float(np.mean([r.success for r in rows])), "mean_return": float(np.mean([r.ret for r in rows])),
               "mean_steps": float(np.mean([r.steps for r in rows]))}
        for name, rows in results.items()
    }


def _dyna_comparison(config: WorldModelConfig, make_env, world_model) -> dict:
    """Q-learning, Dyna-Q (its table model of tried pairs), Dyna in the true simulator, Dyna in the LM (every
    imagined step the LM's answer), and Dyna in the LM with tried pairs replayed from what happened (the LM answers
    only for untried ones), on map 0."""
    env = make_env(0)
    variants = {  # name: (transition model, replay tried pairs)
        "q_learning": (None, False), "dyna_q_table": (None, True), "dyna_true_model": (EnvModel(env), False),
        "dyna_lm_world_model": (world_model, False), "dyna_lm_world_model_remembering": (world_model, True),
    }
    out: dict = {}
    for name, (model, remember) in variants.items():
        runs = [q_learning(lambda: make_env(0), config.dyna_real_steps, model, config.dyna_planning_steps,
                           seed=config.seed + s, eval_every=20, eval_episodes=1, progress=config.progress,
                           remember=remember, optimism=config.dyna_optimism)  # no model, nothing remembered: Q-learning
                for s in range(config.dyna_seeds)]
        solved = [r.steps_to_solve for r in runs]
        out[name] = {
            "steps_to_solve": solved,
            # unsolved seeds count as the whole budget, so the mean is a lower bound when any is None
            "mean_steps_to_solve": float(np.mean([s if s is not None else config.dyna_real_steps for s in solved])),
            "solved_fraction": float(np.mean([s is not None for s in solved])),
            "curve_steps": runs[0].real_steps,
            "curve_success": [float(np.mean(v)) for v in zip(*(r.success for r in runs))],
            "invalid_predictions": int(sum(r.invalid_predictions for r in runs)),
        }
    env.close()
    return out


# collect(config, counts) -> (transitions, action names): an agent text env's random-play transitions (the
# language-agent layer above this one reads specs such as babyai:GoToObj: `tandem.lm_as_agent.imagined`)
TextCollector = Callable[[WorldModelConfig, dict], tuple[list[TextTransition], list[str]]]


def run_world_model(config: WorldModelConfig, collect_text: TextCollector | None = None) -> dict:
    """The whole `tandem world-model` run; returns the report written to `out/metrics.json`. An agent env
    (``babyai:GoToObj``) needs `collect_text`: `tandem.lm_as_agent.imagined.run_agent_world_model` passes it."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    counts: dict = {}
    if is_toy_text(config.env):
        maps = frozen_lake_maps(config.n_maps, config.map_size, config.seed) if config.env.startswith("FrozenLake") else None
        make_env = map_env_factory(config.env, maps)
        names = action_names(make_env(0))
        transitions = collect_transitions(make_env, config.episodes, seed=config.seed, progress=config.progress, counts=counts)
    else:
        if collect_text is None:
            raise ValueError(f"{config.env!r} is an agent env: run it with tandem.lm_as_agent.imagined.run_agent_world_model "
                             "(as `tandem world-model --env` does)")
        transitions, names = collect_text(config, counts)
        if config.plan_episodes or config.dyna_real_steps:
            print(f"[tandem] {config.env}: no planning or Dyna comparison (its true simulator cannot be reset to a "
                  "text state); train a policy inside the world model with `tandem agent-rl --env worldmodel:"
                  f"{config.out}`", flush=True)
    train, held_out = split_transitions(transitions, config.eval_fraction, config.seed)
    if config.trained is not None:  # measured again, no training: planning and Dyna in a model trained before
        world_model, sft_metrics = load_world_model(config.trained, names), {"trained": str(config.trained)}
    else:
        world_model, sft_metrics = train_world_model(config, train, held_out, names, config.engine,
                                                     env_spec=agent_env_spec(config))
    report: dict = {
        "env": config.env, "model": str(config.model) if config.model else "tiny, from scratch",
        "n_transitions": len(transitions), "real_steps": counts.get("steps", 0), "n_train": len(train), "n_held_out": len(held_out),
        "sft": sft_metrics,
        "held_out": evaluate_world_model(world_model, held_out),
        "train_sample": evaluate_world_model(world_model, train[: len(held_out)]),
    }
    held = report["held_out"]
    print(f"[tandem] world model, held out: next state {held['next_state_accuracy']:.3f} (copying "
          f"{held['copy_state_baseline']:.3f}), reward {held['reward_accuracy']:.3f}, done {held['done_accuracy']:.3f}",
          flush=True)

    def save(phase: str) -> None:  # after each phase: a run stopped during planning or Dyna keeps what finished
        report["lm_queries"], report["lm_parse_errors"] = world_model.n_queries, world_model.n_parse_errors
        report["seconds"], report["finished"] = time.perf_counter() - started, phase
        write_json(Path(config.out) / "metrics.json", report)

    save("evaluation")
    if config.plan_episodes and is_toy_text(config.env):
        report["planning"] = {"planner": config.planner, "horizon": config.horizon,
                              **_plan_comparison(config, make_env, world_model)}
        save("planning")
    if config.dyna_real_steps and is_toy_text(config.env):
        # the LM on every step of the map Dyna learns on: where its mistakes are before Dyna replays them
        report["lm_model_check"] = model_accuracy(world_model, make_env(0), seed=config.seed)
        report["dyna"] = _dyna_comparison(config, make_env, world_model)
    save("all")
    plot_world_model(report, Path(config.out) / "world_model.png")
    return report


def plot_world_model(report: dict, path: Path) -> None:
    plt = headless_pyplot()
    panels = 1 + ("planning" in report) + ("dyna" in report)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.6))
    axes = np.atleast_1d(axes)
    held = report["held_out"]
    names = ["next state", "reward", "done", "copy-state\nbaseline"]
    axes[0].bar(names, [held["next_state_accuracy"], held["reward_accuracy"], held["done_accuracy"], held["copy_state_baseline"]],
                color=["C0", "C0", "C0", "grey"])
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title(f"held-out exact match ({int(held['n_transitions'])} transitions)")
    k = 1
    if "planning" in report:
        plan = report["planning"]
        axes[k].bar(["true simulator", "LM world model"], [plan["true_simulator"]["success_rate"], plan["lm_world_model"]["success_rate"]])
        axes[k].set_ylim(0, 1.05)
        axes[k].set_title(f"{plan['planner']} planning (H={plan['horizon']}): success")
        k += 1
    if "dyna" in report:
        for name, row in report["dyna"].items():
            axes[k].plot(row["curve_steps"], row["curve_success"], label=name)
        axes[k].set_xlabel("real environment steps")
        axes[k].set_ylabel("greedy success (mean over seeds)")
        axes[k].legend(fontsize=8)
        axes[k].set_title("Dyna vs Q-learning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
