"""The one episode evaluator of tandem's agents: play `episodes` whole episodes of an actor and report each.

Every agent measures itself with `play_episodes`: DQN's greedy success (`dqn.greedy_success`), tabular Q-learning
and Dyna (`planning.evaluate_greedy`), language-conditioned policies (`language_conditioned.success_rate`), the
Decision Transformer (`decision_transformer.evaluate_decision_transformer`) and the random baseline of offline
datasets. Episodes run on a list of plain environments side by side (one env: one episode after another); episode
k starts on the first env that is free, reset with seed `reset_seed(k)`, so a result depends only on the seeds,
never on how many envs played or which one finished first. The actor answers for all running envs at once
(one batched forward pass for a neural policy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym


@dataclass(frozen=True)
class EpisodeOutcome:
    """One finished episode: its return (the environment's own reward, `info["env_reward"]` under reward shaping),
    length, last reward, and whether it terminated (rather than hitting a time or step limit)."""

    ret: float
    steps: int
    last_reward: float
    terminated: bool


Act = Callable[[list[int], list[Any]], Sequence[Any]]


class EpisodeActor(Protocol):
    """An actor with memory across an episode's steps (the Decision Transformer's context); plain actors are
    functions `act(envs, observations) -> actions`."""

    def start(self, env: int, observation: Any) -> None: ...

    def act(self, envs: list[int], observations: list[Any]) -> Sequence[Any]: ...

    def record(self, env: int, action: Any, reward: float, observation: Any, ended: bool) -> None: ...


def play_episodes(envs: Sequence[gym.Env], actor: Act | EpisodeActor, episodes: int, reset_seed: Callable[[int], int],
                  max_steps: int | None = None) -> list[EpisodeOutcome]:
    """Play `episodes` episodes of `actor` on `envs` (in the order they finish); `max_steps` cuts an episode short.

    `actor(live, observations)` gets the indices of the envs with a running episode and their observations and
    returns one action each. An `EpisodeActor` is also told when env i starts an episode and what each step gave.
    """
    act = actor.act if hasattr(actor, "act") else actor
    start = getattr(actor, "start", None)
    record = getattr(actor, "record", None)
    n = min(len(envs), episodes)
    observations: list[Any] = [None] * n
    totals, lengths = [0.0] * n, [0] * n
    running = [False] * n
    started = 0

    def begin(i: int) -> None:
        nonlocal started
        observations[i] = envs[i].reset(seed=reset_seed(started))[0]
        totals[i], lengths[i], running[i] = 0.0, 0, True
        started += 1
        if start is not None:
            start(i, observations[i])

    for i in range(n):
        begin(i)
    outcomes: list[EpisodeOutcome] = []
    while any(running):
        live = [i for i in range(n) if running[i]]
        for i, action in zip(live, act(live, [observations[i] for i in live]), strict=True):
            observation, reward, terminated, truncated, info = envs[i].step(action)
            totals[i] += float(info.get("env_reward", reward))
            lengths[i] += 1
            ended = bool(terminated or truncated) or (max_steps is not None and lengths[i] >= max_steps)
            if record is not None:
                record(i, action, float(reward), observation, ended)
            observations[i] = observation
            if ended:
                outcomes.append(EpisodeOutcome(totals[i], lengths[i], float(reward), bool(terminated)))
                running[i] = False
                if started < episodes:
                    begin(i)
    return outcomes
