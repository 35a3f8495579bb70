"""Built-in verifiers: rule-based rewards for RL with verifiable rewards, registered by name.

    numeric = get_verifier("numeric", tolerance=1e-4)
    numeric(["Q: 2+2?"], [" 2 + 2 = 4\\n#### 4"], answer=[4])      # [1.0]
    get_verifier("math")(["Q"], ["so \\boxed{\\frac{1}{2}}"], answer=["0.5"])  # [1.0] (needs math-verify)
    get_verifier("code")(["Q"], ["```python\\ndef f(x):\\n    return 2 * x\\n```"], tests=["assert f(2) == 4"])  # [1.0]

Every verifier is a small dataclass whose fields are its options, with a `name` and the reward-function
call signature. `register_verifier` adds one to `VERIFIERS`; `get_verifier(name, **options)` builds it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from tandem.rewards.answers import extract_answer
from tandem.rewards.base import RewardSpecError
from tandem.registry import registrar

VERIFIERS: dict[str, type] = {}

# The GSM8K final-answer line, as the built-in arithmetic task writes it: "#### 85", "#### -1,234.5".
FINAL_ANSWER_PATTERN = r"####[ \t]*[-+]?\d[\d,]*(?:\.\d+)?[ \t]*$"


# Class decorator: make a verifier dataclass available as `get_verifier(name)`.
register_verifier = registrar(VERIFIERS, "verifier name")


def get_verifier(name: str, **options: Any):
    """Build the registered verifier `name`; options are its dataclass fields."""
    if name not in VERIFIERS:
        raise RewardSpecError(f"unknown verifier {name!r}; known verifiers: {', '.join(sorted(VERIFIERS))}")
    cls = VERIFIERS[name]
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RewardSpecError(f"verifier {name!r} has no option {', '.join(unknown)}; its options: {', '.join(known)}")
    try:
        return cls(**options)
    except TypeError as error:  # a required option is missing
        raise RewardSpecError(f"verifier {name!r}: {error}; its options: {', '.join(known)}") from error


def _column(columns: dict[str, list], name: str, verifier: str, n: int) -> list:
    if name not in columns:
        given = ", ".join(sorted(columns)) or "none"
        raise ValueError(f"verifier {verifier!r} needs the dataset column {name!r}; the columns given are: {given}")
    values = list(columns[name])
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def normalise_whitespace(text: str) -> str:
    """Strip, and collapse every run of whitespace to one space."""
    return " ".join(text.split())


@register_verifier("exact_match")
@dataclass
class ExactMatch:
    """1.0 when the completion equals the reference in `column` (after normalising whitespace), else 0.0.

    A row whose reference is None gets None (not applicable).
    """

    column: str = "answer"
    ignore_case: bool = False
    name: str = "exact_match"

    def _normal(self, text: str) -> str:
        text = normalise_whitespace(text)
        return text.casefold() if self.ignore_case else text

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        references = _column(columns, self.column, self.name, len(completions))
        return [
            None if reference is None else float(self._normal(completion) == self._normal(str(reference)))
            for completion, reference in zip(completions, references, strict=True)
        ]


@register_verifier("numeric")
@dataclass
class NumericAnswer:
    """1.0 when the completion's final number matches the reference number, else 0.0 (also when it has none).

    The completion's answer is read by `extract_answer`: after the last `####` (the GSM8K convention), else
    in the last `\\boxed{}`, else the last number in the text. The reference in `column` may be a number or
    text read the same way (so a GSM8K `answer` solution ending in `#### 72` works as is); None gives None.
    Numbers match when `math.isclose(predicted, reference, rel_tol=relative_tolerance, abs_tol=tolerance)`.
    """

    column: str = "answer"
    tolerance: float = 1e-6
    relative_tolerance: float = 0.0
    fractions: bool = True
    name: str = "numeric"

    def _reference(self, value: Any, row: int) -> float | None:
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        number = extract_answer(str(value), self.fractions)
        if number is None:
            raise ValueError(f"row {row}: reference {self.column}={value!r} holds no number")
        return number

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        references = _column(columns, self.column, self.name, len(completions))
        rewards: list[float | None] = []
        for row, (completion, value) in enumerate(zip(completions, references, strict=True)):
            reference = self._reference(value, row)
            if reference is None:
                rewards.append(None)
                continue
            predicted = extract_answer(completion, self.fractions)
            correct = predicted is not None and math.isclose(
                predicted, reference, rel_tol=self.relative_tolerance, abs_tol=self.tolerance
            )
            rewards.append(float(correct))
        return rewards


@register_verifier("regex")
@dataclass
class RegexMatch:
    """1.0 when the completion matches `pattern` (`re.search`, or the whole text with `full_match`), else 0.0.

    `^` and `$` match at line boundaries (`re.MULTILINE`), so `r"^#### \\d+$"` checks a line of its own.
    """

    pattern: str
    full_match: bool = False
    ignore_case: bool = False
    name: str = "regex"
    _compiled: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = re.MULTILINE | (re.IGNORECASE if self.ignore_case else 0)
        try:
            self._compiled = re.compile(self.pattern, flags)
        except re.error as error:
            raise RewardSpecError(f"verifier {self.name!r}: bad regular expression {self.pattern!r}: {error}") from error

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        match: Callable[[str], Any] = self._compiled.fullmatch if self.full_match else self._compiled.search
        return [float(match(completion) is not None) for completion in completions]


@register_verifier("format")
@dataclass
class FormatCheck(RegexMatch):
    """A regex check whose default pattern is the GSM8K final-answer line `#### N` (the arithmetic task's format)."""

    pattern: str = FINAL_ANSWER_PATTERN
    name: str = "format"


@register_verifier("task_gold")
@dataclass
class TaskGold:
    """A built-in task's gold reward, `get_task(task, **task_options).gold_reward`, as a reward source."""

    task: str = "arithmetic"
    task_options: dict = field(default_factory=dict)
    name: str = ""
    _task: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from tandem.tasks import get_task  # tasks import heavy text generators; only load them when asked

        try:
            self._task = get_task(self.task, **self.task_options)
        except (ValueError, TypeError) as error:
            raise RewardSpecError(f"task reward {self.task!r}: {error}") from error
        self.name = self.name or f"task:{self.task}"

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        return self._task.gold_reward(prompts, completions, **columns)



@register_verifier("math")
@dataclass
class MathAnswer:
    """1.0 when the completion's final answer equals the reference mathematically (Hugging Face's Math-Verify).

    The answer is read with `math_verify.parse` (which prefers the last `\\boxed{}` and understands LaTeX,
    fractions, roots, sets, intervals and plain numbers) from the text after the last `####` when there is
    one (the GSM8K convention), else from the whole completion; `math_verify.verify(gold, answer)` then
    compares them symbolically and numerically. The reference in `column` is a number or text read the
    same way (a GSM8K solution ending in `#### 72`, `\\frac{1}{2}`, `$x^2+1$`); None gives None.

    Math-Verify bounds each parse and comparison by `timeout` seconds with `signal.alarm`, which works only
    in the main thread; elsewhere (a reward scored in a worker thread) it runs without a time limit.
    Needs `pip install math-verify` (or the `reasoning` extra).
    """

    column: str = "answer"
    timeout: int | None = 5
    name: str = "math"
    _math_verify: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            import math_verify
        except ImportError as error:
            raise RewardSpecError(
                "verifier 'math' needs Hugging Face's math-verify: pip install math-verify (or pip install 'tandem[reasoning]')"
            ) from error
        self._math_verify = math_verify

    def _timeout(self) -> int | None:
        import threading

        return self.timeout if threading.current_thread() is threading.main_thread() else None

    def _parse(self, text: str, reference: bool = False) -> list:
        marker = text.rfind("####")
        if marker >= 0:
            text = text[marker + 4 :].strip()
        # Math-Verify finds LaTeX only between delimiters: a bare answer such as 2\sqrt{2} would read as 2.
        if (reference or marker >= 0) and "\\" in text and "$" not in text and "\\boxed" not in text:
            text = f"${text}$"
        return self._math_verify.parse(text, parsing_timeout=self._timeout())

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        references = _column(columns, self.column, self.name, len(completions))
        rewards: list[float | None] = []
        for row, (completion, value) in enumerate(zip(completions, references, strict=True)):
            if value is None:
                rewards.append(None)
                continue
            gold = self._parse(str(value), reference=True)
            if not gold:
                raise ValueError(f"row {row}: reference {self.column}={value!r} holds no answer Math-Verify can read")
            answer = self._parse(completion)
            rewards.append(float(bool(answer) and self._math_verify.verify(gold, answer, timeout_seconds=self._timeout())))
        return rewards


@register_verifier("code")
@dataclass
class CodeTests:
    """1.0 when the completion's last ```python block passes the asserts in the row's `column` (Python source, or a
    list of lines), else 0.0 (a failed assert, an error, a timeout, a refused operation, no code block). A row
    whose tests are None gets None.

    Each completion runs in `tandem.sandbox` (`seconds` of wall time, `memory_mb` of address space, `isolation`:
    auto, strict, fallback or off), `workers` at once (0: min(cores, 8)). `counts` says how many runs ended in
    each status (ok, error, timeout, memory, network, write, killed, no_code) since the verifier was built;
    `last_results` holds the last batch's runs (stdout is only ever the verdict; stderr is cut to 4000 characters).
    """

    column: str = "tests"
    seconds: float = 2.0
    memory_mb: int = 512
    isolation: str | None = None
    workers: int = 0
    name: str = "code"
    _scorer: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from tandem.sandbox import SandboxLimits, SandboxUnavailable
        from tandem.tasks.code import CodeScorer  # tasks import heavy text generators; only load them when asked

        self._scorer = CodeScorer(SandboxLimits(seconds=self.seconds, memory_mb=self.memory_mb, isolation=self.isolation),
                                  self.workers)
        try:
            self._scorer.check()
        except (SandboxUnavailable, ValueError) as error:
            raise RewardSpecError(f"verifier {self.name!r}: {error}") from error

    @property
    def counts(self):
        return self._scorer.counts

    @property
    def last_results(self):
        return self._scorer.last_results

    def __call__(self, prompts: list[str], completions: list[str], **columns: list) -> list[float | None]:
        tests = _column(columns, self.column, self.name, len(completions))
        rows = [row for row, test in enumerate(tests) if test is not None]
        scores = self._scorer([completions[row] for row in rows], [tests[row] for row in rows])
        rewards: list[float | None] = [None] * len(completions)
        for row, score in zip(rows, scores):
            rewards[row] = score
        return rewards
