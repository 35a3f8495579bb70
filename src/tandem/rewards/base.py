"""The reward interface, and importing a user's reward function by name.

A reward function is any callable

    f(prompts: list[str], completions: list[str], **columns) -> list[float | None]

returning one reward per completion. `columns` are the dataset's extra columns as lists aligned with
`prompts` (e.g. `answer=[85, 12]`); a function takes the ones it needs and ignores the rest (`**_`).
None means "not applicable to this sample" (a format check on a sample it does not cover, say).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

RewardFunction = Callable[..., list]


class RewardSpecError(ValueError):
    """A reward named on the command line or in a config cannot be built (bad spec, missing module or function)."""


@runtime_checkable
class RewardSource(Protocol):
    """A named reward function: what trainers, `WeightedSum` and `score_safely` work with."""

    name: str

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]: ...


@dataclass
class NamedReward:
    """A plain callable given a name (for logs and error messages)."""

    function: RewardFunction
    name: str

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        return self.function(prompts, completions, **columns)


def reward_name(source: Any) -> str:
    """The name a source is reported under: its `name`, else its function name, else its repr."""
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(source, "__qualname__", None) or getattr(source, "__name__", None) or repr(source)


def as_reward_source(function: RewardFunction, name: str | None = None) -> RewardSource:
    """`function` itself when it already has a `name` (and no other is asked for), else it wrapped in `NamedReward`."""
    if not callable(function):
        raise TypeError(f"a reward function must be callable, got {type(function).__name__}")
    if name is None and isinstance(getattr(function, "name", None), str):
        return function
    return NamedReward(function, name or reward_name(function))


def load_reward_function(target: str) -> RewardFunction:
    """Import a user's reward function from `"package.module:function"` or `"path/to/file.py:function"`.

    The function may be nested in a class or object (`"module:Scorer.score"`). A module path is imported
    normally (so it must be on `sys.path`, e.g. run from the folder holding it); a path ending in `.py`
    is loaded from that file. Raises `RewardSpecError` naming what is missing.
    """
    module_part, sep, attribute = target.rpartition(":")
    if not sep or not module_part or not attribute:
        raise RewardSpecError(
            f"reward function {target!r} must look like 'module:function' or 'path/to/file.py:function'"
        )
    module = _load_module(module_part, target)
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            public = sorted(name for name in vars(module) if not name.startswith("_"))
            raise RewardSpecError(
                f"reward function {target!r}: {module_part!r} has no attribute {attribute!r} "
                f"(it defines: {', '.join(public) or 'nothing public'})"
            )
        found = getattr(found, part)
    if not callable(found):
        raise RewardSpecError(
            f"reward function {target!r} is a {type(found).__name__}, not a callable "
            "f(prompts, completions, **columns) -> list[float | None]"
        )
    return found


def _load_module(module_part: str, target: str):
    if module_part.endswith(".py"):
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise RewardSpecError(f"reward function {target!r}: no such file {str(path)!r}")
        module_name = f"tandem_user_reward_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules[module_name]
            raise
        return module
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as error:
        missing = error.name or module_part
        if not (module_part == missing or module_part.startswith(missing + ".")):
            raise  # the user's module exists but itself imports something missing: show the real error
        raise RewardSpecError(
            f"reward function {target!r}: cannot import module {module_part!r} ({error}); "
            "run from the folder that holds it, add that folder to PYTHONPATH, or pass 'path/to/file.py:function'"
        ) from error
