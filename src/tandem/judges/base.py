"""The judge interface (the AI critic of RLAIF, Lee et al. 2023, and Constitutional AI, Bai et al. 2022b):
score one response, or compare two.

    verdicts = judge.score(prompts, responses)            # value in [0, 1] per response
    verdicts = judge.compare(prompts, responses_a, responses_b)   # value = P(response a is better)

Every call returns one `Verdict` per sample. A verdict that could not be obtained (timeout, server
error, unparsable text...) has `value=None` and a `reason`; it is counted in `judge.stats`, logged with
its sample, and handled by the judge's `on_unusable` policy:

    "skip"     (default) the value stays None: the sample is dropped downstream (`JudgeReward` returns None)
    "neutral"  the value becomes 0.5, with the reason kept (so `verdict.usable` is still False)
    "raise"    `UnusableVerdictError` naming the sample

`compare` asks in both orders by default and combines the two answers by the judge's `calibration`:

    "average"   p = (p_AB + 1 - p_BA) / 2                   (Lee et al. 2023; Zheng et al. 2023)
    "log_odds"  logit p = (logit p_AB - logit p_BA) / 2      (cancels a constant log-odds bias exactly)

Both cancel the judge's preference for a position and always pick the same winner; they differ in scale.
A judge that picks the same position in both orders for most pairs (a small judge answering "A"
whatever it is shown) is warned about once: its verdicts carry little more than position.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from collections.abc import Callable
from typing import Any

from tandem.judges.cache import VerdictCache, verdict_key
from tandem.judges.verdict import Verdict, unusable  # noqa: F401 (part of this module's API)
from tandem.judges.templates import JudgeTemplate, load_template
from tandem.registry import registrar
from tandem.rewards.safety import shorten

logger = logging.getLogger("tandem.judges")

ON_UNUSABLE = ("skip", "neutral", "raise")
NEUTRAL = 0.5
MAX_LOGGED_EXAMPLES = 20
POSITION_ONLY_FRACTION = 0.9  # warn when at least this share of pairs picks the same position in both orders...
POSITION_ONLY_MIN_PAIRS = 16  # ...once this many pairs have been asked both ways
LOG_ODDS_CLIP = 1e-9  # probabilities are read in [clip, 1 - clip]: a saturated order keeps a finite log-odds

CALIBRATIONS: dict[str, Callable[[float, float], float]] = {}
register_calibration = registrar(CALIBRATIONS, "calibration")


@register_calibration("average")
def swap_average(p_first: float, p_swapped: float) -> float:
    """Position-debiased preference: (p_AB + 1 - p_BA) / 2 (Lee et al. 2023; Zheng et al. 2023).

    `p_first` = P(a better) asked with a shown first; `p_swapped` = P(b better) asked with b shown first.
    It cancels an additive bias in probability, but a judge that answers "A" with ~0.99 in both orders
    is squeezed to ~0.5 whatever its remaining preference (see `swap_log_odds`).
    """
    return (p_first + 1.0 - p_swapped) / 2.0


@register_calibration("log_odds")
def swap_log_odds(p_first: float, p_swapped: float) -> float:
    """Position-calibrated preference from the two orders' log-odds: sigmoid((logit p_AB - logit p_BA) / 2).

    If the judge's log-odds for "first shown is better" are s + b with a shown first and -s + b with b
    shown first (s the content preference, b a constant positional bias), the half-difference is s:
    the bias cancels exactly, however large, and the judge's confidence is kept on its own scale
    (contextual calibration, Zhao et al. 2021 "Calibrate before use"; swap debiasing, Zheng et al. 2023).
    For two labels logit p_AB = log P(A) - log P(B): the label log-probs compared against the swapped
    order's. It orders pairs exactly as `swap_average` does (both are monotone in p_AB - p_BA when
    the other is fixed, and equal 0.5 iff p_AB = p_BA) but does not squeeze a biased judge to 0.5.
    Probabilities are clipped to [1e-9, 1 - 1e-9], so two saturated orders give 0.5 or ~0/1, not NaN.
    """
    a = min(max(p_first, LOG_ODDS_CLIP), 1.0 - LOG_ODDS_CLIP)
    b = min(max(p_swapped, LOG_ODDS_CLIP), 1.0 - LOG_ODDS_CLIP)
    half_difference = 0.5 * (math.log(a / (1.0 - a)) - math.log(b / (1.0 - b)))
    return 1.0 / (1.0 + math.exp(-half_difference))


def position_only(p_first: float, p_swapped: float) -> str | None:
    """"first" or "second" when the same shown position wins in both orders (the verdict follows position), else None."""
    if p_first > 0.5 and p_swapped > 0.5:
        return "first"
    if p_first < 0.5 and p_swapped < 0.5:
        return "second"
    return None


def combine_orders(first: Verdict, swapped: Verdict, calibration: str = "average") -> Verdict:
    """The both-orders verdict on (a, b) from the verdict asked as (a, b) and the one asked as (b, a)."""
    parts = (first, swapped)
    raw = f"[a first] {first.raw}\n[b first] {swapped.raw}"
    if not first.usable or not swapped.usable:
        bad = first if not first.usable else swapped
        order = "a first" if bad is first else "b first"
        return Verdict(None, bad.reason, raw, "both_orders", f"{order}: {bad.detail}".rstrip(": "), parts=parts)
    return Verdict(CALIBRATIONS[calibration](first.value, swapped.value), None, raw, "both_orders", parts=parts)


def check_calibration(calibration: str) -> str:
    """`calibration` if it names a registered way of combining the two orders, else a one-line ValueError."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {sorted(CALIBRATIONS)}, got {calibration!r}")
    return calibration


def check_orders(both_orders: bool, calibration: str) -> str:
    """`calibration`, unless it asks to combine two orders that are not asked (a one-line ValueError)."""
    if not both_orders and calibration != "average":
        raise ValueError(f"calibration={calibration!r} combines the two orders of a pair; it needs both_orders=True")
    return calibration


class UnusableVerdictError(RuntimeError):
    """Raised under `on_unusable="raise"`: names the judge, the sample and why its verdict is unusable."""

    def __init__(self, judge: str, index: int, verdict: Verdict, sample: dict[str, str]) -> None:
        self.verdict, self.index, self.sample = verdict, index, sample
        texts = ", ".join(f"{key}={shorten(value)!r}" for key, value in sample.items())
        super().__init__(
            f"judge {judge!r}: unusable verdict ({verdict.reason}: {verdict.detail or shorten(verdict.raw)}) "
            f"for sample {index} ({texts}); use on_unusable='skip' to drop such samples instead"
        )


@dataclass
class JudgeStats:
    """Running counts over a judge's life: questions asked, cache hits, unusable verdicts by reason."""

    samples: int = 0
    questions: int = 0
    cache_hits: int = 0
    unusable: Counter = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)  # the first unusable samples, for the log
    pairs_both_orders: int = 0
    position_only: Counter = field(default_factory=Counter)  # pairs won by the same shown position in both orders

    @property
    def n_unusable(self) -> int:
        return sum(self.unusable.values())

    @property
    def order_disagreements(self) -> int:
        """Pairs whose winner flips when the order is swapped: the same position won both times."""
        return sum(self.position_only.values())

    @property
    def position_only_fraction(self) -> float | None:
        """Share of the pairs asked in both orders whose verdict followed the position (None before any)."""
        return self.order_disagreements / self.pairs_both_orders if self.pairs_both_orders else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples, "questions": self.questions, "cache_hits": self.cache_hits,
            "unusable": self.n_unusable, "unusable_by_reason": dict(self.unusable),
            "pairs_both_orders": self.pairs_both_orders, "order_disagreements": self.order_disagreements,
            "position_only": dict(self.position_only), "position_only_fraction": self.position_only_fraction,
            "examples": self.examples[:5],
        }


class Judge:
    """Base class: the policy for unusable verdicts, both-orders averaging and bookkeeping.

    Subclasses implement `_score(prompts, responses)` and `_compare_ordered(prompts, first, second)`
    (P(first better) as shown in that order), each returning one `Verdict` per sample.

    Args:
        on_unusable: "skip", "neutral" or "raise" (see the module docstring).
        both_orders: `compare` asks (a, b) and (b, a) and combines them (twice the questions).
        calibration: how the two orders combine: "average" (`swap_average`) or "log_odds" (`swap_log_odds`).
        name: how the judge is reported.
    """

    name: str = "judge"

    def __init__(self, *, on_unusable: str = "skip", both_orders: bool = True, calibration: str = "average",
                 name: str | None = None) -> None:
        if on_unusable not in ON_UNUSABLE:
            raise ValueError(f"on_unusable must be one of {ON_UNUSABLE}, got {on_unusable!r}")
        self.on_unusable = on_unusable
        self.both_orders = both_orders
        self.calibration = check_orders(both_orders, check_calibration(calibration))
        if name is not None:
            self.name = name
        self.stats = JudgeStats()
        self._warned_position_only = False

    # ----- the interface ------------------------------------------------------

    def score(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        """One verdict per response: its quality in [0, 1]."""
        prompts, responses = _aligned(prompts, responses=responses)
        verdicts = self._score(prompts, responses) if prompts else []
        return self._handle(verdicts, prompts, {"response": responses})

    def compare(self, prompts: list[str], responses_a: list[str], responses_b: list[str]) -> list[Verdict]:
        """One verdict per pair: the probability that response a is better than response b."""
        prompts, responses_a, responses_b = _aligned(prompts, responses_a=responses_a, responses_b=responses_b)
        if not prompts:
            return []
        if self.both_orders:  # both orders in one backend call: one batch, or one round of concurrent requests
            n = len(prompts)
            asked = self._compare_ordered(prompts + prompts, responses_a + responses_b, responses_b + responses_a)
            first, swapped = asked[:n], asked[n:]
            calibration = check_calibration(self.calibration)  # an attribute: `tandem judge` may set it after init
            verdicts = [combine_orders(f, s, calibration) for f, s in zip(first, swapped)]
            for f, s in zip(first, swapped):
                if f.usable and s.usable:
                    self.stats.pairs_both_orders += 1
                    position = position_only(f.value, s.value)
                    if position is not None:
                        self.stats.position_only[position] += 1
            self._warn_if_position_only()
        else:
            verdicts = self._compare_ordered(prompts, responses_a, responses_b)
        return self._handle(verdicts, prompts, {"response_a": responses_a, "response_b": responses_b})

    def _warn_if_position_only(self) -> None:
        """Once per judge: warn when most pairs asked both ways were won by the same position both times."""
        stats = self.stats
        if self._warned_position_only or stats.pairs_both_orders < POSITION_ONLY_MIN_PAIRS:
            return
        if stats.position_only_fraction < POSITION_ONLY_FRACTION:
            return
        self._warned_position_only = True
        first = stats.position_only["first"]
        logger.warning(
            "judge %s: %d of %d pairs (%.0f%%) were won by the same position in both orders (first shown: %d, second: %d), "
            "so its verdicts follow position, not content, and both-orders values sit near 0.5 holding only the small "
            "difference between orders. calibration='log_odds' reads that difference on the judge's own log-odds scale "
            "(same winners, not squeezed to 0.5); the score mode (each response judged alone) or a bigger judge may "
            "carry more signal", self.name, stats.order_disagreements, stats.pairs_both_orders,
            100 * stats.position_only_fraction, first, stats.order_disagreements - first,
        )

    def _score(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        raise NotImplementedError

    def _compare_ordered(self, prompts: list[str], first: list[str], second: list[str]) -> list[Verdict]:
        raise NotImplementedError

    # ----- unusable verdicts --------------------------------------------------

    def _handle(self, verdicts: list[Verdict], prompts: list[str], responses: dict[str, list[str]]) -> list[Verdict]:
        if len(verdicts) != len(prompts):
            raise RuntimeError(f"judge {self.name!r} returned {len(verdicts)} verdicts for {len(prompts)} samples")
        self.stats.samples += len(prompts)
        handled = []
        for index, verdict in enumerate(verdicts):
            if not verdict.usable:
                sample = {"prompt": prompts[index], **{key: values[index] for key, values in responses.items()}}
                self._record_unusable(index, verdict, sample)
                if self.on_unusable == "raise":
                    raise UnusableVerdictError(self.name, index, verdict, sample)
                if self.on_unusable == "neutral":
                    verdict = replace(verdict, value=NEUTRAL)
            handled.append(verdict)
        return handled

    def _record_unusable(self, index: int, verdict: Verdict, sample: dict[str, str]) -> None:
        self.stats.unusable[verdict.reason] += 1
        short = {key: shorten(value) for key, value in sample.items()}
        if len(self.stats.examples) < MAX_LOGGED_EXAMPLES:
            self.stats.examples.append({"reason": verdict.reason, "detail": verdict.detail, "raw": shorten(verdict.raw, 200), **short})
        level = logging.WARNING if self.stats.n_unusable <= MAX_LOGGED_EXAMPLES else logging.DEBUG
        logger.log(level, "judge %s: unusable verdict (%s%s) for sample %d %s; policy %s", self.name, verdict.reason,
                   f": {verdict.detail}" if verdict.detail else "", index, short, self.on_unusable)


@dataclass(frozen=True)
class Question:
    """One question for a template judge: chat messages and how to read the answer."""

    messages: list[dict[str, str]]
    labels: list[str]
    values: list[float]
    verdict_prefix: str
    cot: bool
    key: str


class TemplateJudge(Judge):
    """A judge asked through prompt templates (local and remote models); backends implement `_ask`.

    Args:
        score_template, compare_template: built-in template names or YAML paths (see `templates.py`).
        cot: ask for reasoning before the verdict (then read the verdict after `verdict_prefix`).
        cache: a `VerdictCache`, a JSONL path for an on-disk cache, or None for an in-memory one.
        examples: in-context examples replacing the templates' own (list of dicts with the template's fields).
        **judge_options: `on_unusable`, `both_orders`, `calibration`, `name` (see `Judge`).
    """

    identity: str = "judge"  # backend id in cache keys: the same question to another model is another verdict

    def __init__(
        self,
        *,
        score_template: str | JudgeTemplate = "score",
        compare_template: str | JudgeTemplate = "compare",
        cot: bool = False,
        cache: VerdictCache | str | None = None,
        examples: list[dict] | None = None,
        **judge_options: Any,
    ) -> None:
        super().__init__(**judge_options)
        self.score_template = load_template(score_template, "score")
        self.compare_template = load_template(compare_template, "compare")
        if examples is not None:
            self.score_template = self.score_template.with_examples([e for e in examples if "response" in e])
            self.compare_template = self.compare_template.with_examples([e for e in examples if "response_a" in e])
        self.cot = cot
        self.cache = cache if isinstance(cache, VerdictCache) else VerdictCache(cache)

    def _questions(self, template: JudgeTemplate, rows: list[dict[str, str]]) -> list[Question]:
        return [
            Question(
                template.messages(fields, self.cot), template.answer_labels, template.label_values,
                template.verdict_prefix, self.cot,
                verdict_key(self.identity, template.fingerprint, self.cot, fields),
            )
            for fields in rows
        ]

    def _score(self, prompts: list[str], responses: list[str]) -> list[Verdict]:
        rows = [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]
        return self._ask_cached(self._questions(self.score_template, rows))

    def _compare_ordered(self, prompts: list[str], first: list[str], second: list[str]) -> list[Verdict]:
        rows = [{"prompt": p, "response_a": a, "response_b": b} for p, a, b in zip(prompts, first, second)]
        return self._ask_cached(self._questions(self.compare_template, rows))

    def _ask_cached(self, questions: list[Question]) -> list[Verdict]:
        """Answers from the cache where present; the rest asked in one `_ask` call; usable answers cached."""
        answers: list[Verdict | None] = [self.cache.get(q.key) for q in questions]
        missing = [i for i, answer in enumerate(answers) if answer is None]
        self.stats.questions += len(missing)
        self.stats.cache_hits += len(questions) - len(missing)
        if missing:
            asked = self._ask([questions[i] for i in missing])
            if len(asked) != len(missing):
                raise RuntimeError(f"judge backend {self.identity} answered {len(asked)} of {len(missing)} questions")
            for i, verdict in zip(missing, asked):
                answers[i] = verdict
                if verdict.usable:  # failures may pass (a timeout): ask again next time
                    self.cache.put(questions[i].key, verdict)
        return answers

    def _ask(self, questions: list[Question]) -> list[Verdict]:
        raise NotImplementedError


def _aligned(prompts: list[str], **responses: list[str]) -> tuple[list[str], ...]:
    prompts = list(prompts)
    lists = []
    for key, values in responses.items():
        values = list(values)
        if len(values) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(values)} {key}")
        lists.append(values)
    for key, values in [("prompts", prompts)] + list(zip(responses, lists)):
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise TypeError(f"{key}[{index}] must be a string, got {type(value).__name__}")
    return (prompts, *lists)
