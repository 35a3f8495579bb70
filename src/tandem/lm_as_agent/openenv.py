"""OpenEnv environments as text environments: ``openenv:PACKAGE.MODULE.CLASS[:key=value...]``.

OpenEnv (`openenv-core`, Meta/Hugging Face) environments are Gymnasium-like: an `Environment[Action, Observation,
State]` has ``reset(seed=...) -> Observation`` and ``step(action) -> Observation``, each observation a pydantic
model carrying ``done`` and ``reward``; actions are pydantic models too (``EchoAction(message=...)``). Its
clients (``EnvClient(...).sync()``) answer ``reset``/``step`` with ``StepResult(observation, reward, done)``.
This adapter builds CLASS in-process (any zero-argument callable that returns an environment or a client: a
class, or a factory that connects a client) and plays it with the model's text:

- the reply becomes the action: an instance of the environment's action class (read from its generic base, or
  ``action=PACKAGE.MODULE.ACTION``) with the reply in its one text field (or ``field=NAME``); an environment
  with no action class gets the text itself;
- the observation the model reads is its text field (``observation=NAME``), else its fields other than
  ``done``/``reward``/``metadata`` as ``name: value`` lines;
- an episode that ends (``done``) with a last reward of at least ``success`` (default: any positive reward)
  counts as a success; held-out episodes reset with seeds offset by `EVAL_SEED_OFFSET`.

``openenv-core`` itself is not needed to use this adapter (it reads the protocol, not the package), so an
environment class written against it runs here as soon as its own module imports.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any

from tandem.lm_as_agent.env import EVAL_SEED_OFFSET, EnvSuite, InvalidAction, StepResult, TextEnv, register_env_kind

_PROTOCOL_FIELDS = {"done", "reward", "metadata"}


def import_object(path: str, what: str) -> Any:
    """`package.module.Name` -> the object."""
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{what} {path!r}: give the full dotted path, e.g. my_envs.echo.EchoEnvironment")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{what} {path!r}: cannot import {module_name!r}: {error}") from None
    if not hasattr(module, name):
        raise ValueError(f"{what} {path!r}: module {module_name!r} has no {name!r}")
    return getattr(module, name)


def action_class(env: Any) -> type | None:
    """The `Action` type argument of the environment's `Environment[Action, Observation, State]` base, if any."""
    for klass in type(env).__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin, args = typing.get_origin(base), typing.get_args(base)
            if origin is not None and getattr(origin, "__name__", "") in ("Environment", "EnvClient") and args \
                    and inspect.isclass(args[0]):
                return args[0]
    return None


def text_field(model: type, given: str | None) -> str:
    """The field of a pydantic `model` that carries text: `given`, else its one `str` field outside the protocol's."""
    fields = getattr(model, "model_fields", {})
    if given is not None:
        if given not in fields:
            raise ValueError(f"{model.__name__} has no field {given!r}; its fields: {', '.join(fields)}")
        return given
    texts = [name for name, info in fields.items() if name not in _PROTOCOL_FIELDS and info.annotation is str]
    if len(texts) != 1:
        raise ValueError(f"cannot tell which field of {model.__name__} takes the model's reply ({', '.join(fields)}): "
                         f"give field=NAME in the environment spec")
    return texts[0]


def render_observation(observation: Any, field: str | None = None) -> str:
    """The text the model reads from an OpenEnv observation."""
    if field is not None:
        return str(getattr(observation, field))
    if isinstance(observation, str):
        return observation
    values = {k: v for k, v in (observation.model_dump() if hasattr(observation, "model_dump") else vars(observation)).items()
              if k not in _PROTOCOL_FIELDS}
    if len(values) == 1:
        return str(next(iter(values.values())))
    return "\n".join(f"{name}: {value}" for name, value in values.items())


class OpenEnvTextEnv(TextEnv):
    """An OpenEnv environment (or sync client) played with text; see the module docstring."""

    def __init__(self, env: Any, action: type | None = None, field: str | None = None, observation: str | None = None,
                 success: float | None = None, instructions: str | None = None, seed_offset: int = 0):
        self.env, self.observation_field, self.success, self.seed_offset = env, observation, success, seed_offset
        self._reset_takes_seed = "seed" in inspect.signature(env.reset).parameters
        self.action = action or action_class(env)
        self.field = text_field(self.action, field) if self.action is not None else None
        name = type(env).__name__
        about = (inspect.getdoc(type(env)) or "").split("\n\n")[0].replace("\n", " ")
        self.instructions = instructions or (f"You act in the environment {name}" + (f": {about}" if about else "")
                                             + ". Each turn you read an observation; reply with your action.")

    def _read(self, result: Any) -> tuple[str, float, bool]:
        observation = getattr(result, "observation", result)  # a client's StepResult wraps it
        reward, done = getattr(result, "reward", None), getattr(result, "done", False)
        return render_observation(observation, self.observation_field), float(reward or 0.0), bool(done)

    def reset(self, seed: int | None = None) -> str:
        seed = None if seed is None else seed + self.seed_offset
        result = self.env.reset(seed=seed) if self._reset_takes_seed else self.env.reset()
        return self._read(result)[0]

    def step(self, action: str) -> StepResult:
        reply = action.strip()
        result = self.env.step(self.action(**{self.field: reply}) if self.action is not None else reply)
        text, reward, done = self._read(result)
        info: dict[str, Any] = {"invalid_action": False}
        if done:
            info["success"] = reward >= self.success if self.success is not None else reward > 0
        return StepResult(text, reward, done, False, info)

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if callable(close):
            close()


@register_env_kind("openenv")
def _openenv_kind(spec: str, path: str | None, invalid: InvalidAction, invalid_penalty: float,
                  action: str | None = None, field: str | None = None, observation: str | None = None,
                  success: float | None = None, instructions: str | None = None, max_turns: int = 16) -> EnvSuite:
    if not path:
        raise ValueError(f"{spec!r}: name the environment class, e.g. openenv:my_envs.echo.EchoEnvironment")
    factory = import_object(path, "OpenEnv environment")
    action_type = import_object(action, "OpenEnv action") if action else None

    def make(split: str) -> TextEnv:
        return OpenEnvTextEnv(factory(), action_type, field, observation, success, instructions,
                              EVAL_SEED_OFFSET if split == "eval" else 0)

    make("train").close()  # fail now, with the reason, rather than in the first episode
    return EnvSuite(spec, make, max_turns)
