"""Call a reward source so that a broken reward is never trained on silently.

`score_safely` checks what a source returns: one value per completion, each a finite number or None.
A source that raises, returns a list of the wrong length, NaN, inf or something that is not a number
either stops the run with a `RewardError` naming the source and the first offending sample
(`on_error="raise"`), or has those samples' rewards set to None and counted in a `RewardReport` for the
trainer to log (`on_error="skip"`). When a whole-batch call raises or returns the wrong length, the
samples are scored again one at a time to find which ones fail (so a source may be called n + 1 times).
"""

from __future__ import annotations

import math
import numbers
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tandem.rewards.base import reward_name
from tandem.rewards.combine import WeightedSum

ON_ERROR = ("raise", "skip")
# Rewards beyond this magnitude are errors like NaN: 1e300 is finite, yet it makes every weight NaN in one step.
DEFAULT_BOUND = 1e6


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut in the middle to at most about `limit` characters, keeping its start and end."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    return f"{text[: limit - tail - 5]} ... {text[-tail:]}"


@dataclass(frozen=True)
class SampleProblem:
    """What went wrong with one sample (index None: with the batch as a whole); texts are shortened."""

    source: str
    index: int | None
    kind: str  # "exception", "timeout", "wrong_length", "nan", "inf", "out_of_bounds" or "not_a_number"
    detail: str
    prompt: str | None = None
    completion: str | None = None

    def describe(self) -> str:
        if self.index is None:
            where = "the batch as a whole (each sample scored alone is fine)"
        else:
            where = f"sample {self.index} (prompt={self.prompt!r}, completion={self.completion!r})"
        return f"reward {self.source!r} failed on {where}: {self.detail}"


class RewardError(RuntimeError):
    """A reward source failed; `problem` names the source, the sample and what it returned or raised."""

    def __init__(self, problem: SampleProblem) -> None:
        self.problem = problem
        super().__init__(f"{problem.describe()} (on_error='skip', --reward-errors skip on the command line, leaves failing samples out of training instead)")


@dataclass
class RewardReport:
    """What `score_safely` skipped and why, for the trainer's log."""

    source: str
    n_samples: int
    n_not_applicable: int = 0  # None returned on purpose (not counted as skipped)
    problems: list[SampleProblem] = field(default_factory=list)  # one per failure of a skipped sample
    retried: list[str] = field(default_factory=list)  # batch failures that made a source score one at a time

    @property
    def skipped_indices(self) -> set[int]:
        return {problem.index for problem in self.problems if problem.index is not None}

    @property
    def n_skipped(self) -> int:
        return len(self.skipped_indices)

    @property
    def counts(self) -> dict[str, int]:
        """Failures by kind ("nan": 2, ...)."""
        return dict(Counter(problem.kind for problem in self.problems))

    @property
    def clean(self) -> bool:
        return not self.problems and not self.retried

    def summary(self, max_examples: int = 3) -> str:
        text = f"reward {self.source!r}: {self.n_skipped} of {self.n_samples} samples skipped"
        if self.problems:
            text += " (" + ", ".join(f"{kind}: {count}" for kind, count in self.counts.items()) + ")"
        text += f", {self.n_not_applicable} not applicable"
        if self.retried:
            text += f"; {len(self.retried)} batch call(s) failed and were retried one sample at a time ({self.retried[0]})"
        return "\n  ".join([text] + [problem.describe() for problem in self.problems[:max_examples]])

    def as_dict(self, max_examples: int = 3) -> dict[str, Any]:
        return {
            "source": self.source,
            "samples": self.n_samples,
            "skipped": self.n_skipped,
            "not_applicable": self.n_not_applicable,
            "skipped_by_kind": self.counts,
            "retried_batches": len(self.retried),
            "examples": [asdict(problem) for problem in self.problems[:max_examples]],
        }


@dataclass
class ScoredRewards:
    """Checked rewards (None: not applicable or skipped), the report, and each underlying source's rewards."""

    rewards: list[float | None]
    report: RewardReport
    by_source: dict[str, list[float | None]]


def score_safely(
    source: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    columns: dict[str, Sequence] | None = None,
    on_error: str = "raise",
    bound: float = DEFAULT_BOUND,
    timeout: float | None = None,
) -> ScoredRewards:
    """Score `completions` with `source`, checking every value (finite, |r| <= `bound`); see the module docstring."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    prompts, completions = list(prompts), list(completions)
    columns = {key: list(values) for key, values in (columns or {}).items()}
    if len(completions) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    for key, values in columns.items():
        if len(values) != len(prompts):
            raise ValueError(f"column {key!r} has {len(values)} values for {len(prompts)} samples")
    if isinstance(source, WeightedSum):
        return _score_weighted_sum(source, prompts, completions, columns, on_error, bound, timeout)
    name = reward_name(source)
    report = RewardReport(name, len(prompts))
    rewards = _score(source, name, prompts, completions, columns, on_error, report, bound, timeout)
    return _finish(rewards, report, {name: rewards})


def _score_weighted_sum(source: WeightedSum, prompts, completions, columns, on_error, bound, timeout) -> ScoredRewards:
    """Score each term on its own so failures carry the term's name; a sample failing in any term is skipped."""
    report = RewardReport(source.name, len(prompts))
    per_term, by_source = [], {}
    for _, term in source.terms:
        scored = score_safely(term, prompts, completions, columns, on_error, bound, timeout)
        report.problems.extend(scored.report.problems)
        report.retried.extend(scored.report.retried)
        per_term.append(scored.rewards)
        for key, values in scored.by_source.items():
            unique, copy = key, 2
            while unique in by_source:
                unique, copy = f"{key}#{copy}", copy + 1
            by_source[unique] = values
    skipped = report.skipped_indices
    rewards = [None if index in skipped else reward for index, reward in enumerate(source.combine(per_term))]
    return _finish(rewards, report, by_source)


def _finish(rewards: list[float | None], report: RewardReport, by_source: dict) -> ScoredRewards:
    skipped = report.skipped_indices
    report.n_not_applicable = sum(reward is None and index not in skipped for index, reward in enumerate(rewards))
    return ScoredRewards(rewards, report, by_source)


def _score(source, name, prompts, completions, columns, on_error, report, bound, timeout) -> list[float | None]:
    def failed(index: int | None, kind: str, detail: str, cause: BaseException | None) -> None:
        problem = SampleProblem(
            name, index, kind, detail,
            None if index is None else shorten(prompts[index]),
            None if index is None else shorten(completions[index]),
        )
        if on_error == "raise":
            raise RewardError(problem) from cause
        report.problems.append(problem)

    values, kind, detail, cause = _call(source, prompts, completions, columns, timeout)
    if kind == "timeout":  # a hung reward is not retried sample by sample: that could hang n times over
        for index in range(len(prompts)):
            failed(index, kind, detail, cause)
        return [None] * len(prompts)
    if kind is not None and len(prompts) == 1:
        failed(0, kind, detail, cause)
        return [None]
    if kind is None:
        rewards = []
        for index, value in enumerate(values):
            reward, value_kind, value_detail = _check_value(value, bound)
            if value_kind is not None:
                failed(index, value_kind, value_detail, None)
            rewards.append(reward)
        return rewards

    # The batch call failed as a whole: score one sample at a time to find the culprits.
    report.retried.append(detail)
    rewards, found = [], False
    for index in range(len(prompts)):
        single = {key: column[index : index + 1] for key, column in columns.items()}
        single_values, single_kind, single_detail, single_cause = _call(
            source, prompts[index : index + 1], completions[index : index + 1], single, timeout
        )
        reward = None
        if single_kind is None:
            reward, single_kind, single_detail = _check_value(single_values[0], bound)
        if single_kind is not None:
            found = True
            failed(index, single_kind, single_detail, single_cause)
        rewards.append(reward)
    if not found and on_error == "raise":
        failed(None, kind, detail, cause)
    return rewards  # under "skip", scores of samples that pass alone stand


def _call_with_timeout(call, timeout: float | None):
    """`call()`, or TimeoutError after `timeout` seconds (the call goes on in a daemon thread, which is left behind)."""
    if timeout is None:
        return call()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed back to the caller's thread
            outcome["error"] = error

    worker = threading.Thread(target=run, name="tandem-reward", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s (--reward-timeout)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _call(source, prompts, completions, columns, timeout: float | None = None):
    """(values, None, None, None) when `source` returns one value per sample, else (None, kind, detail, cause)."""
    # copies: a reward that edits its inputs must not change what is trained on
    call = lambda: source(list(prompts), list(completions), **{k: list(v) for k, v in columns.items()})  # noqa: E731
    try:
        result = _call_with_timeout(call, timeout)
    except TimeoutError as error:
        return None, "timeout", str(error), error
    except (Exception, SystemExit) as error:  # sys.exit() inside a reward must not end the run silently
        return None, "exception", f"raised {type(error).__name__}: {error}", error
    values = _as_list(result)
    if values is None:
        return None, "wrong_length", f"returned a {type(result).__name__}, not a list of {len(prompts)} rewards", None
    if len(values) != len(prompts):
        return None, "wrong_length", f"returned {len(values)} rewards for {len(prompts)} samples", None
    return values, None, None, None


def _as_list(result: Any) -> list | None:
    if isinstance(result, (list, tuple)):
        return list(result)
    if hasattr(result, "tolist") and getattr(result, "ndim", 0) == 1:  # a torch tensor or numpy array
        return result.tolist()
    return None


def _check_value(value: Any, bound: float = DEFAULT_BOUND) -> tuple[float | None, str | None, str | None]:
    """(reward, None, None) for a finite number of magnitude at most `bound`, or None; else (None, kind, detail)."""
    if value is None:
        return None, None, None
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        value = value.item()
    if not isinstance(value, numbers.Real):
        return None, "not_a_number", f"returned {shorten(repr(value), 40)} ({type(value).__name__}), not a number or None"
    try:
        reward = float(value)
    except OverflowError:  # an int such as 10**400
        return None, "out_of_bounds", f"returned an integer too large for a float ({shorten(repr(value), 40)})"
    if math.isnan(reward):
        return None, "nan", "returned NaN"
    if math.isinf(reward):
        return None, "inf", f"returned {reward}"
    if abs(reward) > bound:
        return None, "out_of_bounds", f"returned {reward:g}, beyond the bound {bound:g} (--reward-bound)"
    return reward, None, None
