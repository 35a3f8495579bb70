"""Environments for language agents: text in, text out, one small interface over every kind of world.

A `TextEnv` has `instructions` (the system message: the task and how to answer), `reset(seed) -> first
observation text`, `step(action text) -> StepResult` and `close()`. Adapters registered by kind turn other
worlds into one (`make_env_suite("kind:key=value:...")`):

- ``frozenlake:size=4`` (random solvable maps, one per seed, so held-out maps test generalisation; ``maps=fixed``
  for Gymnasium's own), ``corridor:length=3`` (a trivial walk to the right end, for tests), ``babyai:GoToObj``
  (each object placed relative to the agent, "2 steps ahead and 1 step to your left"; ``view=grid`` for the whole
  grid as characters);
- any registered Gymnasium id (``CliffWalking-v1``, ``Taxi-v4``, ``BabyAI-GoToLocal-v0``, or ``gym:ID``) through
  `GymTextEnv`: hand-written renderers where they read better (`tandem.lm_inside_agents.render`), the env's own ``ansi``
  rendering otherwise, and a generic rendering of Discrete / Box / Tuple / Dict observations as a last resort;
  actions are parsed from the reply by name (`parse_action_name`) and invalid ones handled as configured;
- ``task:NAME`` (a single-turn reasoning task as a one-step environment, so RLVR and agent RL share one loop).

Other modules register more kinds with `register_env_kind` (text games, tools, the LM world model).

Seeds choose start states: a suite's ``make("train")`` env is reset with training seeds and ``make("eval")`` with
held-out ones (`EVAL_SEED_OFFSET` apart), so evaluation is on maps / missions / problems training never saw.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from minigrid.minigrid_env import MiniGridEnv

from tandem.lm_inside_agents.render import (MINIGRID_LEGEND, action_names, has_renderer, parse_action_name, render_minigrid_relative,
                                            render_state)
from tandem.registry import registrar
from tandem.specs import parse_options

logger = logging.getLogger(__name__)
EVAL_SEED_OFFSET = 1_000_000  # held-out start states are drawn from seeds this far from the training ones
InvalidAction = Literal["penalty", "retry", "end"]


@dataclass
class StepResult:
    """What one action did. `info` keys tandem reads: ``invalid_action`` (the reply named no action),
    ``success`` (set when an episode ends: was the task achieved), ``role`` (``"tool"`` for a tool's answer,
    else the observation is the user's turn)."""

    observation: str
    reward: float
    terminated: bool
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class TextEnv(ABC):
    """A world a language model acts in by writing text."""

    instructions: str = ""  # the system message: task, the actions, how to answer
    ask: str = ""  # appended to each observation the model reads: the request for one action ("" for none)

    @abstractmethod
    def reset(self, seed: int | None = None) -> str:
        """Start an episode (the start state a function of `seed`) and return the first observation."""

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Apply the model's reply."""

    def close(self) -> None:
        """Release what the env holds."""


def prefetch_steps(envs: list[TextEnv], actions: list[str]) -> None:
    """Before one turn's steps: envs whose class computes many steps at once (``prefetch(envs, actions)``, as an
    LM world model decodes a batch) get theirs together; `step` then answers each from what was computed."""
    by_class: dict[type, tuple[list, list]] = {}
    for env, action in zip(envs, actions):
        if callable(getattr(type(env), "prefetch", None)):
            group = by_class.setdefault(type(env), ([], []))
            group[0].append(env)
            group[1].append(action)
    for cls, (group_envs, group_actions) in by_class.items():
        try:
            cls.prefetch(group_envs, group_actions)
        except Exception as error:  # each env's own step raises it again, naming its episode and turn
            logger.warning("%s.prefetch failed (%s); stepping each env alone", cls.__name__, error)


class EnvError(RuntimeError):
    """An environment raised while resetting or stepping; names the episode and turn."""


def invalid_reply(action: str, names: list[str], state: str, invalid: InvalidAction, penalty: float) -> StepResult:
    """What a reply naming none of `names` gets: the state shown again, then the actions to choose from, and the
    penalty (``retry``: none) or the end of the episode (``end``); the environment is not stepped. The state comes
    first, so a retry's prompt starts as every prompt of that state does (its tokens are computed once)."""
    ended = invalid == "end"
    return StepResult(f"{state}\n'{action.strip()[:80]}' is not an action; reply with one of: {', '.join(names)}.",
                      0.0 if invalid == "retry" else penalty, ended, False,
                      {"invalid_action": True, **({"success": False} if ended else {})})


def action_ask(names: list[str]) -> str:
    """The line after each observation that asks for one action by name. The action rule
    (`tandem.lm_inside_agents.render.parse_action_name`): the earliest action name in the reply is the action taken, a bare
    number is an index; a reply naming none is invalid."""
    return f"Which action do you take? Answer with one word: {', '.join(names)}."


# ---- Gymnasium ------------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# action names of common Gymnasium envs whose actions are plain integers
GYM_ACTION_NAMES: dict[str, list[str]] = {
    "CliffWalking": ["up", "right", "down", "left"],
    "Blackjack": ["stick", "hit"],
    "CartPole": ["left", "right"],
    "MountainCar": ["left", "none", "right"],
    "Acrobot": ["negative", "none", "positive"],
    "LunarLander": ["none", "left", "main", "right"],
}


def render_space(space: gym.Space, obs: Any) -> str:
    """A generic text rendering of an observation of `space`: Discrete, Box (small), MultiDiscrete/Binary, Tuple, Dict, Text."""
    if isinstance(space, gym.spaces.Discrete):
        return f"state {int(obs)} (of {int(space.n)})"
    if isinstance(space, gym.spaces.Text):
        return str(obs)
    if isinstance(space, gym.spaces.Tuple):
        return "; ".join(render_space(s, o) for s, o in zip(space.spaces, obs))
    if isinstance(space, gym.spaces.Dict):
        return "; ".join(f"{key}: {render_space(s, obs[key])}" for key, s in space.spaces.items())
    values = np.asarray(obs)
    if values.size > 64:
        raise ValueError(f"an observation of {values.size} numbers is too large to render as text; give the env a renderer")
    if np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
        return " ".join(str(int(v)) for v in values.ravel())
    return " ".join(f"{v:.3g}" for v in values.astype(np.float64).ravel())


def _family(env: gym.Env) -> str:
    spec = getattr(env, "spec", None) or getattr(env.unwrapped, "spec", None)
    return (spec.id if spec is not None else type(env.unwrapped).__name__).split("-")[0]


class GymTextEnv(TextEnv):
    """A Gymnasium env with a discrete action space, as text.

    Observations: the hand-written renderer of `tandem.lm_inside_agents.render` (MiniGrid/BabyAI, FrozenLake, Taxi), else the
    env's ``ansi`` rendering, else `render_space`. The reply is parsed for an action name; a reply naming none is
    an invalid action: ``penalty`` (reward `invalid_penalty`, the state is shown again), ``retry`` (no penalty,
    asked again) or ``end`` (the episode ends with the penalty). None of them steps the environment.
    """

    def __init__(self, env: gym.Env, task: str | None = None, names: list[str] | None = None,
                 invalid: InvalidAction = "penalty", invalid_penalty: float = -0.1, seed_offset: int = 0,
                 view: Literal["grid", "relative"] = "grid"):
        if view not in ("grid", "relative"):
            raise ValueError(f"view must be grid or relative, not {view!r}")
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"{_family(env)}: a language agent needs a Discrete action space, not {env.action_space}")
        if invalid not in ("penalty", "retry", "end"):
            raise ValueError(f"invalid-action handling must be penalty, retry or end, not {invalid!r}")
        self.env, self.invalid, self.invalid_penalty, self.seed_offset = env, invalid, invalid_penalty, seed_offset
        family = _family(env)
        self.names = names or GYM_ACTION_NAMES.get(family) or action_names(env)
        if len(self.names) != int(env.action_space.n):
            raise ValueError(f"{family}: {len(self.names)} action names for {int(env.action_space.n)} actions")
        self._custom = has_renderer(env.unwrapped)
        self.view = view
        self.task = task
        self.obs: Any = None
        self.instructions = self._instructions(family)
        self.ask = action_ask(self.names)

    def _instructions(self, family: str) -> str:
        minigrid = isinstance(self.env.unwrapped, MiniGridEnv)
        task = self.task or ("carry out the mission" if minigrid else f"act in the {family} environment to reach its goal")
        if minigrid and self.view == "relative":
            legend = " You see where each object is from where you stand, and how far you can walk ahead."
        else:
            legend = f" The grid {MINIGRID_LEGEND}." if minigrid else ""
        return (f"You are an agent in a text game. Your task: {task}.{legend} Each turn you see the state; reply "
                f"with exactly one action from: {', '.join(self.names)}.")

    def render(self) -> str:
        if self.view == "relative" and isinstance(self.env.unwrapped, MiniGridEnv):
            return render_minigrid_relative(self.env.unwrapped)
        if self._custom:
            return render_state(self.env, self.obs if not isinstance(self.obs, dict) else None)
        if getattr(self.env, "render_mode", None) == "ansi":
            return _ANSI.sub("", str(self.env.render())).strip("\n")
        return render_space(self.env.observation_space, self.obs)

    def reset(self, seed: int | None = None) -> str:
        with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints each rejected placement
            self.obs, _ = self.env.reset(seed=None if seed is None else seed + self.seed_offset)
        return self.render()

    def step(self, action: str) -> StepResult:
        index = parse_action_name(action, self.names)
        if index is None:
            return invalid_reply(action, self.names, self.render(), self.invalid, self.invalid_penalty)
        self.obs, reward, terminated, truncated, info = self.env.step(index)
        result = StepResult(self.render(), float(reward), bool(terminated), bool(truncated),
                            {"invalid_action": False, "action": self.names[index]})
        if terminated or truncated:
            result.info["success"] = bool(info.get("is_success", terminated and self._succeeded(float(reward))))
        return result

    def _succeeded(self, reward: float) -> bool:
        """Sparse-goal envs (FrozenLake, MiniGrid, Taxi's drop-off) pay a positive reward on success; envs that
        only end at their goal (CliffWalking) succeed by terminating."""
        return reward > 0 or _family(self.env) == "CliffWalking"

    def close(self) -> None:
        self.env.close()


def make_gym_env(env_id: str, **kwargs) -> gym.Env:
    """`gym.make(env_id)` with ``render_mode="ansi"`` when the env offers it (its text rendering), else without."""
    if env_id not in gym.registry:
        close = [name for name in gym.registry if name.lower().startswith(env_id.split("-")[0].lower()[:5])][:8]
        raise ValueError(f"unknown Gymnasium id {env_id!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    modes: list[str] = []
    try:
        entry = gym.registry[env_id].entry_point
        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        modes = list(getattr(creator, "metadata", {}).get("render_modes", []))
    except Exception:  # noqa: BLE001 - the metadata is only a hint
        pass
    if "ansi" in modes and "render_mode" not in kwargs:
        kwargs["render_mode"] = "ansi"
    return gym.make(env_id, **kwargs)


# ---- simple worlds ----------------------------------------------------------------------------------------------
class Corridor(TextEnv):
    """Cells 0..length; start at 0, the goal at `length`; actions left / right; reward 1 at the goal.

    A trivial world for tests and smoke runs: the optimal policy says "right" `length` times.
    """

    names = ["left", "right"]

    def __init__(self, length: int = 3, invalid: InvalidAction = "penalty", invalid_penalty: float = -0.1):
        if length < 1:
            raise ValueError("corridor length must be >= 1")
        self.length, self.invalid, self.invalid_penalty, self.position = length, invalid, invalid_penalty, 0
        self.instructions = ("You are in a corridor. Walk to the goal at its right end. Each turn reply with one "
                             "action: left or right.")
        self.ask = action_ask(self.names)

    def _render(self) -> str:
        return "".join("@" if i == self.position else ("G" if i == self.length else ".") for i in range(self.length + 1))

    def reset(self, seed: int | None = None) -> str:
        self.position = 0
        return self._render()

    def step(self, action: str) -> StepResult:
        index = parse_action_name(action, self.names)
        if index is None:
            return invalid_reply(action, self.names, self._render(), self.invalid, self.invalid_penalty)
        self.position = max(0, self.position + (1 if index == 1 else -1))
        done = self.position == self.length
        return StepResult(self._render(), float(done), done, False,
                          {"invalid_action": False, "action": self.names[index], **({"success": True} if done else {})})


class TaskEnv(TextEnv):
    """A single-turn task (`tandem.tasks`) as a one-step environment: the prompt, then the task's gold reward."""

    def __init__(self, task, split: str = "train", pool: int = 1000, seed: int = 0):
        self.task = task
        rows = task.sft_examples(pool, seed=seed) if split == "train" else task.eval_prompts(min(pool, 200), seed=seed)
        self.answers = [row.get("completion") for row in rows]  # demonstrations (`tandem.lm_as_agent.demonstrations`)
        self.rows = [{k: v for k, v in row.items() if k != "completion"} for row in rows]
        self.row: dict = {}
        self.instructions = getattr(task, "instructions", "") or "Answer the question."

    def reset(self, seed: int | None = None) -> str:
        self.index = (seed or 0) % len(self.rows)
        self.row = self.rows[self.index]
        return str(self.row["prompt"])

    def step(self, action: str) -> StepResult:
        columns = {k: [v] for k, v in self.row.items() if k != "prompt"}
        reward = float(self.task.gold_reward([self.row["prompt"]], [action], **columns)[0])
        return StepResult("", reward, True, False, {"invalid_action": False, "success": reward >= 1.0})


# ---- the registry of kinds ----------------------------------------------------------------------------------------
@dataclass
class EnvSuite:
    """Training and held-out environments of one spec: `make(split)` builds a fresh env of that split."""

    spec: str
    make_split: Callable[[str], TextEnv]
    max_turns: int = 16  # a sensible episode length for this world (the command's --max-turns overrides)

    def make(self, split: Literal["train", "eval"] = "train") -> TextEnv:
        return self.make_split(split)


EnvBuilder = Callable[..., EnvSuite]
ENV_KINDS: dict[str, EnvBuilder] = {}


# Decorator: `@register_env_kind(name)` on `builder(spec, positional=None, **options) -> EnvSuite` answers specs
# ``name[:value][:key=value...]``.
register_env_kind = registrar(ENV_KINDS, "environment kind")


def _split_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    kind, _, rest = spec.partition(":")
    first, _, more = rest.partition(":")
    positional = None
    if first and "=" not in first:
        positional, rest = first, more
    return kind, positional, parse_options(rest, f"environment {spec!r}")


def make_env_suite(spec: str, invalid: InvalidAction = "penalty", invalid_penalty: float = -0.1) -> EnvSuite:
    """The `EnvSuite` a spec names: a registered kind (``frozenlake:size=4``) or any Gymnasium id (``CliffWalking-v1``)."""
    _load_plugins()
    kind, _, rest = spec.partition(":")
    if kind == "task":  # the rest is a task spec of its own (`task:rg:leg_counting:size=100`)
        return _task_suite(spec, rest)
    kind, positional, options = _split_spec(spec)
    if kind in ENV_KINDS:
        return ENV_KINDS[kind](spec, positional, invalid=invalid, invalid_penalty=invalid_penalty, **options)
    if kind in gym.registry or re.search(r"-v\d+$", kind):
        return _gym_suite(spec, kind, invalid=invalid, invalid_penalty=invalid_penalty, **options)
    raise ValueError(f"unknown environment {spec!r}: use a Gymnasium id (e.g. CliffWalking-v1) or one of the kinds "
                     f"{', '.join(sorted(ENV_KINDS))}")


def check_env_spec(spec: str) -> str:
    """`spec` if it names a known kind or a registered Gymnasium id (options are checked when it is built)."""
    _load_plugins()
    kind = spec.partition(":")[0]
    if kind not in ENV_KINDS and kind not in gym.registry:
        raise ValueError(f"unknown environment {spec!r}: use a registered Gymnasium id or one of the kinds "
                         f"{', '.join(sorted(ENV_KINDS))}")
    return spec


def _load_plugins() -> None:
    """Kinds registered by other modules (imported here, not at the top: they sit above this one)."""
    import minigrid  # noqa: F401 - registers the MiniGrid / BabyAI ids with Gymnasium


def _gym_suite(spec: str, env_id: str, invalid: InvalidAction, invalid_penalty: float, max_turns: int | None = None,
               view: Literal["grid", "relative"] = "grid", **make_options) -> EnvSuite:
    _load_plugins()
    make_gym_env(env_id, **make_options).close()  # fail now, with the reason, rather than in the first episode
    limit = gym.registry[env_id].max_episode_steps

    def make(split: str) -> TextEnv:
        return GymTextEnv(make_gym_env(env_id, **make_options), invalid=invalid, invalid_penalty=invalid_penalty,
                          seed_offset=EVAL_SEED_OFFSET if split == "eval" else 0, view=view)

    return EnvSuite(spec, make, max_turns or min(limit or 32, 32))


@register_env_kind("gym")
def _gym_kind(spec: str, env_id: str | None, **options) -> EnvSuite:
    if not env_id:
        raise ValueError(f"{spec!r}: name the Gymnasium id, e.g. gym:CliffWalking-v1")
    return _gym_suite(spec, env_id, **options)


class RandomMapFrozenLake(gym.Wrapper):
    """FrozenLake on a fresh solvable random map per seed (Gymnasium's generator), deterministic moves."""

    def __init__(self, size: int = 4, p_frozen: float = 0.8, slippery: bool = False):
        super().__init__(gym.make("FrozenLake-v1", desc=["S" + "F" * (size - 2) + "F"] * (size - 1) + ["F" * (size - 1) + "G"],
                                  is_slippery=slippery))
        self.size, self.p_frozen, self.slippery = size, p_frozen, slippery

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        from gymnasium.envs.toy_text.frozen_lake import generate_random_map

        desc = generate_random_map(size=self.size, p=self.p_frozen, seed=seed)
        self.env = gym.make("FrozenLake-v1", desc=desc, is_slippery=self.slippery)
        return self.env.reset(seed=seed, options=options)


@register_env_kind("frozenlake")
def _frozenlake_kind(spec: str, positional: str | None, invalid: InvalidAction, invalid_penalty: float, size: int = 4,
                     maps: str = "random", slippery: bool = False, p_frozen: float = 0.8, max_turns: int | None = None) -> EnvSuite:
    if maps not in ("random", "fixed"):
        raise ValueError(f"{spec!r}: maps must be random or fixed")
    if maps == "fixed" and size not in (4, 8):
        raise ValueError(f"{spec!r}: Gymnasium's fixed maps are 4x4 and 8x8")

    def make(split: str) -> TextEnv:
        base = (RandomMapFrozenLake(size, p_frozen, slippery) if maps == "random"
                else gym.make("FrozenLake-v1", map_name=f"{size}x{size}", is_slippery=slippery))
        return GymTextEnv(base, task="walk from S to the goal G without stepping into a hole H",
                          invalid=invalid, invalid_penalty=invalid_penalty,
                          seed_offset=EVAL_SEED_OFFSET if split == "eval" else 0)

    return EnvSuite(spec, make, max_turns or 2 * size + 2)


@register_env_kind("corridor")
def _corridor_kind(spec: str, positional: str | None, invalid: InvalidAction, invalid_penalty: float, length: int = 3,
                   max_turns: int | None = None) -> EnvSuite:
    return EnvSuite(spec, lambda split: Corridor(length, invalid, invalid_penalty), max_turns or 2 * length + 2)


@register_env_kind("babyai")
def _babyai_kind(spec: str, level: str | None, invalid: InvalidAction, invalid_penalty: float,
                 max_turns: int | None = None, **make_options) -> EnvSuite:
    level = level or "GoToObj"
    env_id = level if level.startswith("BabyAI-") else f"BabyAI-{level}-v0"
    make_options.setdefault("view", "relative")
    return _gym_suite(spec, env_id, invalid=invalid, invalid_penalty=invalid_penalty, max_turns=max_turns or 16,
                      **make_options)


def _task_suite(spec: str, task_spec: str) -> EnvSuite:
    from tandem.tasks import get_task

    if not task_spec:
        raise ValueError(f"{spec!r}: name the task, e.g. task:arithmetic")
    task = get_task(task_spec)
    return EnvSuite(spec, lambda split: TaskEnv(task, split), 1)


ENV_KINDS["task"] = lambda spec, *args, **options: _task_suite(spec, spec.partition(":")[2])
