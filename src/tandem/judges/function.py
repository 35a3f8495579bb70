"""A judge that is a Python function: the user's own scorer behind the same interface as model judges.

    def score(prompts, responses) -> list[float | None]            # each in [0, 1]
    def compare(prompts, responses_a, responses_b) -> list[float | None]   # P(a better)

Without a `compare` function, pairs are compared through the scores: p = (1 + s_a - s_b) / 2, which is
in [0, 1], 0.5 for equal scores and antisymmetric (p(a, b) = 1 - p(b, a)), so asking in both orders
changes nothing (both_orders defaults to False here). A value that is None, NaN or outside [0, 1], a
wrong-length result or an exception makes the verdicts unusable ("invalid_value", "exception").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from tandem.judges.base import Judge, Verdict, unusable
from tandem.rewards.base import reward_name


def compare_from_scores(score_a: float, score_b: float) -> float:
    """P(a better) from two scores in [0, 1]: (1 + s_a - s_b) / 2."""
    return (1.0 + score_a - score_b) / 2.0


class FunctionJudge(Judge):
    """A judge backed by Python callables (see the module docstring)."""

    def __init__(
        self,
        score: Callable[..., Any] | None = None,
        compare: Callable[..., Any] | None = None,
        *,
        both_orders: bool = False,
        **options: Any,
    ) -> None:
        if score is None and compare is None:
            raise ValueError("FunctionJudge needs a score function, a compare function, or both")
        options.setdefault("name", f"python:{reward_name(score or compare)}")
        super().__init__(both_orders=both_orders, **options)
        self.score_function, self.compare_function = score, compare

    def _score(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        if self.score_function is None:
            raise TypeError(f"judge {self.name!r} has only a compare function; it cannot score single responses")
        return _call(self.score_function, len(prompts), prompts, responses)

    def _compare_ordered(self, prompts: list[str], first: list[str], second: list[str]) -> list[Verdict]:
        if self.compare_function is not None:
            return _call(self.compare_function, len(prompts), prompts, first, second)
        scored = _call(self.score_function, 2 * len(prompts), prompts + prompts, first + second)
        verdicts = []
        for a, b in zip(scored[: len(prompts)], scored[len(prompts) :]):
            if not (a.usable and b.usable):
                bad = a if not a.usable else b
                verdicts.append(Verdict(None, bad.reason, f"{a.raw} vs {b.raw}", "function", bad.detail))
            else:
                verdicts.append(Verdict(compare_from_scores(a.value, b.value), raw=f"{a.raw} vs {b.raw}", method="function"))
        return verdicts


def _call(function: Callable[..., Any], n: int, *arguments: list[str]) -> list[Verdict]:
    try:
        result = function(*arguments)
    except Exception as error:
        return [unusable("exception", detail=f"{type(error).__name__}: {error}", method="function")] * n
    values = result.tolist() if hasattr(result, "tolist") else result
    if not isinstance(values, (list, tuple)) or len(values) != n:
        size = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        return [unusable("exception", detail=f"returned {size}, not a list of {n} values", method="function")] * n
    return [_verdict(value) for value in values]


def _verdict(value: Any) -> Verdict:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0:
        return Verdict(float(value), raw=repr(value), method="function")
    return unusable("invalid_value", repr(value), "expected a number in [0, 1]", "function")
