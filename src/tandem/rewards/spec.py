"""Build a reward from what a user writes on the command line.

    verifier:numeric                      a built-in verifier (options after colons: verifier:numeric:tolerance=0.01)
    verifier:regex:pattern=^#### -?\\d+$   `pattern=` takes the rest of the spec, colons included: put it last
    task:arithmetic                       a built-in task's gold reward (task options likewise: task:sentiment:k=v)
    task:rg:leg_counting:size=1000        a reasoning-gym dataset's own scorer (the task `rg:DATASET:k=v`)
    model:runs/rm/model                   a tandem reward model (options: batch_size, max_length, device)
    python:my_rewards:score               a user's function; also plain my_rewards:score or path/to/file.py:score
    0.5*verifier:format,1.0*verifier:numeric    a weighted sum (weight 1 when none is written)

A string is split at commas that start a new spec; pass a list to keep a spec with such a comma whole
(each list item is one spec). Option values read as int, float, true/false or none where they can, else text.
"""

from __future__ import annotations

import importlib

import re
from collections.abc import Callable, Sequence
from typing import Any

from tandem.registry import registrar
from tandem.rewards.base import RewardSpecError, as_reward_source, load_reward_function
from tandem.specs import parse_option_value, parse_options as _parse_options  # noqa: F401 (re-exported)
from tandem.rewards.combine import WeightedSum
from tandem.rewards.model import RewardModelScorer
from tandem.rewards.verifiers import get_verifier

_WEIGHT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_WEIGHTED = re.compile(rf"^\s*(?:(?P<weight>{_WEIGHT})\s*\*\s*)?(?P<spec>.*?)\s*$", re.DOTALL)
# A comma starts a new spec only when what follows looks like one: an optional weight, then "word:".
_SPEC_SEPARATOR = re.compile(rf",(?=[\s,]*(?:{_WEIGHT}\s*\*\s*)?[\w./~\\-]+:)")


def split_specs(spec: str | Sequence[str]) -> list[str]:
    """The individual specs (weights included) in a comma-separated string, or the items of a list."""
    pieces = _SPEC_SEPARATOR.split(spec) if isinstance(spec, str) else list(spec)
    pieces = [piece.strip() for piece in pieces]
    if not pieces or not all(pieces):
        raise RewardSpecError(f"empty reward spec in {spec!r}")
    return pieces


def parse_options(text: str, spec: str) -> dict[str, Any]:
    """`k=v:k=v` into a dict (see `tandem.specs.parse_options`); a bad piece is a RewardSpecError."""
    return _parse_options(text, f"reward spec {spec!r}", RewardSpecError)


def _verifier(rest: str, spec: str, tokenizer, **placement):
    name, _, options = rest.partition(":")
    return get_verifier(name, **parse_options(options, spec))


def _task(rest: str, spec: str, tokenizer, **placement):
    return get_verifier("task_gold", task=rest)  # get_task parses the options (and rg:DATASET)


def _model(rest: str, spec: str, tokenizer, device=None, dtype=None):
    path, _, options = rest.partition(":")
    options = parse_options(options, spec)
    unknown = set(options) - {"batch_size", "max_length", "device"}
    if unknown:
        raise RewardSpecError(f"reward spec {spec!r}: unknown option(s) {sorted(unknown)}; use batch_size, max_length, device")
    options.setdefault("device", device)
    return RewardModelScorer(path, tokenizer=tokenizer, name=f"model:{path}", dtype=dtype, **options)


def _python(rest: str, spec: str, tokenizer, **placement):
    return as_reward_source(load_reward_function(rest), name=f"python:{rest}")


SPEC_KINDS: dict[str, Callable[..., Any]] = {"verifier": _verifier, "task": _task, "model": _model, "python": _python}
# Kinds that packages above this one provide: imported on first use, they add themselves to SPEC_KINDS with
# `register_spec_kind` (the judges are reward sources built on this package, so it never imports them).
SPEC_PROVIDERS = {"judge": "tandem.judges"}


def register_spec_kind(kind: str, build: Callable[..., Any]) -> None:
    """Make `KIND:rest` specs build with `build(rest, spec, tokenizer, device=..., dtype=...)` (where and in which
    precision a kind that runs a model runs it; None: its own default)."""
    registrar(SPEC_KINDS, "reward spec kind")(kind)(build)


def _spec_kind(kind: str) -> Callable[..., Any] | None:
    if kind not in SPEC_KINDS and kind in SPEC_PROVIDERS:
        importlib.import_module(SPEC_PROVIDERS[kind])
    return SPEC_KINDS.get(kind)


def build_one(spec: str, tokenizer=None, device=None, dtype=None):
    """One reward source from one spec (no weight)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise RewardSpecError(
            f"reward spec {spec!r} must be verifier:NAME, task:NAME, model:PATH, judge:local:PATH, "
            "judge:openai:URL:MODEL, python:MODULE:FUNCTION or MODULE:FUNCTION"
        )
    build = _spec_kind(kind)
    if build is None:  # a plain module:function
        return _python(spec, spec, tokenizer)
    return build(rest, spec, tokenizer, device=device, dtype=dtype)


def build_reward(spec: str | Sequence[str], tokenizer=None, weights: Sequence[float] | None = None, device=None,
                 dtype=None):
    """The reward source a CLI user asked for: one source, or a `WeightedSum` when several (or a weight) are given.

    Args:
        spec: one spec, several separated by commas (each optionally `WEIGHT*spec`), or a list of specs.
        tokenizer: used to tokenize for `model:` specs; None loads the tokenizer saved with the reward model.
        weights: one weight per spec, instead of writing `WEIGHT*` in the specs.
        device: where `model:` reward models and local judges run (unless the spec sets `device=`): the policy's.
        dtype: their precision (the policy's training precision); None: fp32 from a directory.
    """
    pieces = [_WEIGHTED.match(piece) for piece in split_specs(spec)]
    written = [match["weight"] for match in pieces]
    if weights is not None:
        if any(weight is not None for weight in written):
            raise RewardSpecError(f"weights given both in the spec {spec!r} and as weights={list(weights)}")
        if len(weights) != len(pieces):
            raise RewardSpecError(f"{len(weights)} weights for {len(pieces)} reward specs in {spec!r}")
        written = list(weights)
    sources = [build_one(match["spec"], tokenizer, device, dtype) for match in pieces]
    if len(sources) == 1 and written[0] is None:
        return sources[0]
    return WeightedSum([(1.0 if weight is None else float(weight), source) for weight, source in zip(written, sources)])
