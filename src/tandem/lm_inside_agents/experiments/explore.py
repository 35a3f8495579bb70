"""The runs behind `tandem explore` (DQN with and without LLM-guided exploration, after Du et al. 2023) and
`tandem shape` (DQN with and without LLM potential-based reward shaping, Ng, Harada & Russell 1999). Each writes
`metrics.json` and `learning_curve.png` to its `out`; the CLI (`tandem.lm_inside_agents.commands`) only prints the result.

The language model is chosen with --lm: ``oracle`` (the default: NOT a language model, an optimal tabular policy
answering at random with probability --lm-noise, standing in for a competent LM so the command needs no download),
``demo`` (a tiny tandem model fine-tuned on expert demonstrations rendered as text), ``hf`` (your Hugging Face model
directory, --lm-model) or ``endpoint`` (an OpenAI-compatible server, --endpoint-url / --endpoint-model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
from pydantic import Field

from tandem.lm_inside_agents.backends import HFBackend, OpenAIBackend, oracle_backend, train_demo_backend
from tandem.lm_inside_agents.dqn import DQNConfig, DQNResult, same_step_vector_env, train_dqn
from tandem.lm_inside_agents.shaping import PotentialShaping, progress_potential
from tandem.files import atomic_write_text
from tandem.generation.engines import EngineOptions
from tandem.plotting import headless_pyplot

# Sparse-reward tasks with a text renderer; FrozenLake is deterministic here, so one greedy episode is its success.
ENVIRONMENTS: dict[str, Callable[[], gym.Env]] = {
    "frozenlake4x4": lambda: gym.make("FrozenLake-v1", map_name="4x4", is_slippery=False),
    "frozenlake8x8": lambda: gym.make("FrozenLake-v1", map_name="8x8", is_slippery=False),
    "frozenlake8x8-slippery": lambda: gym.make("FrozenLake-v1", map_name="8x8", is_slippery=True),
    "taxi": lambda: gym.make("Taxi-v4"),
}


class AgentLMConfig(DQNConfig, EngineOptions):
    """The environment, the language model, and where results go (plus every DQN option)."""

    out: Path = Field(Path("runs/explore"), description="Run directory: metrics.json, learning_curve.png, the demo model.")
    env: str = Field("frozenlake8x8", description="Environment: " + ", ".join(ENVIRONMENTS) + ", or any registered Gymnasium id with discrete actions (e.g. CliffWalking-v1).")
    lm: Literal["oracle", "demo", "hf", "endpoint"] = Field(
        "oracle", description="Language model: oracle (a noisy optimal policy standing in for an LM, not an LM), demo "
        "(a tiny model trained on expert demonstrations), hf (--lm-model) or endpoint (--endpoint-url).",
    )
    lm_noise: float = Field(0.2, ge=0, le=1, description="oracle: probability of a uniformly random answer.")
    lm_model: Path | None = Field(None, description="hf: a Hugging Face causal-LM directory.")
    endpoint_url: str = Field("http://127.0.0.1:8000/v1", description="endpoint: base URL of an OpenAI-compatible API.")
    endpoint_model: str = Field("default", description="endpoint: the model name to request.")
    demo_episodes: int = Field(200, ge=1, description="demo: expert episodes to fine-tune the tiny model on.")
    demo_steps: int = Field(300, ge=1, description="demo: SFT steps.")
    baseline: bool = Field(True, description="Also train without the language model, for comparison.")
    threads: int = Field(1, ge=1, description="Torch CPU threads (tiny networks run fastest on one).")
    progress: bool = Field(True, description="Show progress bars.")
    eval_episodes: int = Field(1, ge=1, description="Greedy episodes per evaluation (1 suffices on deterministic envs).")
    target_success: float | None = Field(None, ge=0, le=1, description="Stop a run once its greedy success rate reaches this.")


class ExploreConfig(AgentLMConfig):
    out: Path = Field(Path("runs/explore"), description="Run directory: metrics.json, learning_curve.png, the demo model.")


class ShapeConfig(AgentLMConfig):
    out: Path = Field(Path("runs/shape"), description="Run directory: metrics.json, learning_curve.png, the demo model.")
    p_explore_start: float = Field(0.0, ge=0, le=1, description="LM-guided exploration on top (0: shaping only).")
    shaping_scale: float = Field(1.0, description="Phi = scale * the LM's progress rating.")


def task_env_factory(name: str) -> Callable[[], gym.Env]:
    """A zero-argument factory of the env `name`: a named task above, or any registered Gymnasium id with a discrete action space (``CliffWalking-v1``)."""
    if name in ENVIRONMENTS:
        return ENVIRONMENTS[name]
    import minigrid  # noqa: F401 - registers the MiniGrid / BabyAI ids

    if name not in gym.registry:
        raise ValueError(f"unknown environment {name!r}: a registered Gymnasium id or one of: {', '.join(ENVIRONMENTS)}")
    probe = gym.make(name)
    space = probe.action_space
    probe.close()
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(f"{name}: DQN needs a Discrete action space, not {space}")
    return lambda: gym.make(name)


def build_backend(config: AgentLMConfig) -> Any:
    """The language model --lm names."""
    make_env = task_env_factory(config.env)
    if config.lm == "oracle":
        return oracle_backend(make_env(), noise=config.lm_noise, gamma=config.gamma, seed=config.seed)
    if config.lm == "demo":
        return train_demo_backend(make_env(), config.out / "demo_lm", n_episodes=config.demo_episodes,
                                  steps=config.demo_steps, seed=config.seed, progress_bar=config.progress)
    if config.lm == "hf":
        if config.lm_model is None:
            raise FileNotFoundError("--lm hf needs --lm-model, a Hugging Face causal-LM directory")
        return HFBackend(config.lm_model, engine=config.engine)
    return OpenAIBackend(config.endpoint_url, config.endpoint_model)


def dqn_config(config: AgentLMConfig) -> DQNConfig:
    return DQNConfig(**{name: getattr(config, name) for name in DQNConfig.model_fields})


def run_summary(label: str, result: DQNResult) -> dict:
    """The JSON row of one DQN run: steps to the target, throughput, final greedy success and the curve."""
    return {
        "label": label, "steps_to_target": result.steps_to_target, "env_steps": result.env_steps,
        "updates": result.updates, "llm_actions": result.llm_actions, "seconds": result.seconds,
        "env_steps_per_s": result.env_steps_per_s, "updates_per_s": result.updates / max(result.seconds, 1e-9),
        "final_success": result.curve[-1]["success"] if result.curve else None, "curve": result.curve,
    }


def plot_curves(runs: list[dict], path: Path, title: str) -> None:
    """Greedy success rate against environment steps, one line per run."""
    plt = headless_pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    for run in runs:
        axis.plot([c["env_steps"] for c in run["curve"]], [c["success"] for c in run["curve"]], label=run["label"], marker=".")
    axis.set_xlabel("environment steps")
    axis.set_ylabel("greedy success rate")
    axis.set_title(title, fontsize=9)
    axis.set_ylim(-0.05, 1.05)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(config: AgentLMConfig, runs: list[dict], command: str, started: float) -> dict:
    """`metrics.json` and `learning_curve.png` under `config.out`; returns the report."""
    report = {"command": command, "env": config.env, "lm": config.lm, "runs": runs, "seconds": time.perf_counter() - started,
              "config": config.model_dump(mode="json")}
    config.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config.out / "metrics.json", json.dumps(report, indent=2))
    plot_curves(runs, config.out / "learning_curve.png", f"tandem {command}: {config.env}, lm={config.lm}")
    return report


def train_arms(config: AgentLMConfig, make_env: Callable[[], gym.Env],
               arms: list[tuple[str, Callable[[], gym.Env], Any]]) -> list[dict]:
    """One DQN run per arm (label, env factory it trains on, LM guiding exploration or None), each evaluated on
    `make_env`'s plain env, so the arms differ only in what the arm names."""
    dqn = dqn_config(config)
    return [run_summary(label, train_dqn(dqn, same_step_vector_env(make_train_env, dqn.n_envs), make_env(),
                                         backend=guide, progress=config.progress))
            for label, make_train_env, guide in arms]


def run_explore(config: ExploreConfig) -> dict:
    """DQN on --env with LLM-guided exploration (`tandem.lm_inside_agents.dqn`), and without it when --baseline."""
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    make_env = task_env_factory(config.env)
    arms = [(f"DQN + {config.lm} LM (eq. 11)", make_env, build_backend(config))]
    if config.baseline:
        arms.append(("DQN (epsilon-greedy)", make_env, None))
    return write_report(config, train_arms(config, make_env, arms), "explore", started)


def run_shape(config: ShapeConfig) -> dict:
    """DQN on --env with rewards shaped by the LM's progress rating (as a potential), and unshaped when --baseline."""
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    make_env = task_env_factory(config.env)
    backend = build_backend(config)
    potential = progress_potential(backend)

    def shaped() -> gym.Env:
        return PotentialShaping(make_env(), potential, gamma=config.gamma, scale=config.shaping_scale)

    guide = backend if config.p_explore_start > 0 else None
    arms = [(f"DQN + {config.lm} LM shaping (eq. 12)", shaped, guide)]
    if config.baseline:
        arms.append(("DQN (unshaped)", make_env, guide))
    return write_report(config, train_arms(config, make_env, arms), "shape", started)
