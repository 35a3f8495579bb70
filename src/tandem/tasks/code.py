"""Write a small Python function from its docstring: the built-in task for RL with code-execution rewards.

    prompt:     Complete this Python function. Reply with the whole function in a ```python block.

                def clamp(x):
                    \"\"\"Return x limited to the range -3 to 12: -3 when x is smaller, 12 when x is larger, else x.\"\"\"
    completion: ```python
                def clamp(x):
                    return max(-3, min(12, x))
                ```

Twelve templates of small functions, each with constants drawn at random (714 problems); each problem has
six hidden asserts drawn from a generator seeded by the problem itself, so a prompt always has the same tests
and the gold reward can find them from the prompt alone (no `tests` column needed). Problems are split into
train and held-out by a stable hash. The gold reward runs the completion's last ```python block against the
asserts in `tandem.sandbox`: 1 when all pass, else 0 (`CodeScorer`, which `verifier:code` uses too).
"""

from __future__ import annotations

import os
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from tandem.sandbox import SandboxLimits, SandboxResult, choose_isolation, run_tests
from tandem.tasks.base import Task, distinct_draws, is_held_out, register_task

INSTRUCTION = "Complete this Python function. Reply with the whole function in a ```python block."
_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def last_python_block(text: str) -> str | None:
    """The code of the last fenced block (```python, ```py or bare ```; an unclosed last fence runs to the end)."""
    blocks = _BLOCK.findall(text)
    return blocks[-1] if blocks and blocks[-1].strip() else None


def _workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 8))


@dataclass
class CodeScorer:
    """Score completions by running their last ```python block, then the asserts in `tests`, in the sandbox:
    1.0 when every assert passes; 0.0 on a failed assert, an error, a timeout, a refusal or no code block.

    Runs go in parallel on min(cores, 8) threads (each waits on its own sandbox process) unless `workers` says.
    `counts` keeps how many runs ended in each status (and ``no_code``); `last_results` the last batch's runs.
    """

    limits: SandboxLimits = field(default_factory=lambda: SandboxLimits(seconds=2.0))
    workers: int = 0
    counts: Counter = field(default_factory=Counter)
    last_results: list[SandboxResult | None] = field(default_factory=list)

    def check(self) -> None:
        """Raise SandboxUnavailable now where the sandbox cannot be isolated (rather than at the first batch)."""
        choose_isolation(self.limits.isolation)

    def __call__(self, completions: Sequence[str], tests: Sequence[str | Sequence[str]]) -> list[float]:
        solutions = [last_python_block(completion) for completion in completions]
        tests = [test if isinstance(test, str) else "\n".join(test) for test in tests]
        todo = [index for index, solution in enumerate(solutions) if solution is not None]
        results: list[SandboxResult | None] = [None] * len(solutions)
        with ThreadPoolExecutor(self.workers or _workers()) as pool:
            for index, result in zip(todo, pool.map(lambda i: run_tests(solutions[i], tests[i], self.limits), todo)):
                results[index] = result
        self.counts.update("no_code" if result is None else result.status for result in results)
        self.last_results = results
        return [float(result is not None and result.ok) for result in results]


# ---- the problems ----------------------------------------------------------------------------------------

WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "pixel", "quiet", "zebra", "maple")


def _ints(rng: random.Random, low: int, high: int, longest: int) -> list[int]:
    return [rng.randint(low, high) for _ in range(rng.randint(0, longest))]


def _text(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
    return " ".join(word.capitalize() if rng.random() < 0.3 else word for word in words) + rng.choice(["", "!", "."])


@dataclass(frozen=True)
class Template:
    """A function to write: its docstring and body are format strings over `constants` (name -> choices)."""

    name: str
    parameters: str
    doc: str
    body: str
    constants: dict[str, tuple]
    arguments: Callable[[random.Random], tuple]  # one call's arguments, drawn for a hidden test

    @cached_property
    def pattern(self) -> re.Pattern:
        """The prompt's function stub with each constant a named group (a repeated one a back-reference)."""
        head, tail = self.stub("\0").split("\0")
        regex, seen = re.escape(head), set()
        for literal, name, _, conversion in string.Formatter().parse(self.doc):
            regex += re.escape(literal)
            if name is None:
                continue
            if name in seen:
                regex += f"(?P={name})"
            else:
                seen.add(name)
                shown = sorted((_show(value, conversion) for value in self.constants[name]), key=len, reverse=True)
                regex += f"(?P<{name}>" + "|".join(map(re.escape, shown)) + ")"
        return re.compile(regex + re.escape(tail))

    def stub(self, doc: str) -> str:
        return f'def {self.name}({self.parameters}):\n    """{doc}"""\n'

    def parse(self, prompt: str) -> dict[str, Any] | None:
        """The constants of this template's problem in `prompt` (its last stub), or None."""
        matches = list(self.pattern.finditer(prompt))
        if not matches:
            return None
        shown = matches[-1].groupdict()
        return {name: next(v for v in self.constants[name] if _show(v, _conversion(self.doc, name)) == shown[name])
                for name in self.constants}


def _show(value: Any, conversion: str | None) -> str:
    return repr(value) if conversion == "r" else str(value)


def _conversion(doc: str, name: str) -> str | None:
    return next(conversion for _, field_name, _, conversion in string.Formatter().parse(doc) if field_name == name)


TEMPLATES: tuple[Template, ...] = (
    Template("scale_and_shift", "x", "Return x multiplied by {a}, plus {b}.", "return x * {a} + {b}",
             {"a": tuple(range(2, 10)), "b": tuple(range(-9, 10))}, lambda rng: (rng.randint(-50, 50),)),
    Template("count_multiples", "numbers", "Return how many of the integers in the list numbers are divisible by {k}.",
             "return sum(1 for n in numbers if n % {k} == 0)", {"k": tuple(range(2, 10))},
             lambda rng: (_ints(rng, -30, 30, 8),)),
    Template("clamp", "x", "Return x limited to the range {low} to {high}: {low} when x is smaller, {high} when x is "
             "larger, else x.", "return max({low}, min({high}, x))",
             {"low": tuple(range(-20, 1)), "high": tuple(range(1, 21))}, lambda rng: (rng.randint(-40, 40),)),
    Template("sum_of_multiples", "n", "Return the sum of the positive multiples of {k} that are smaller than n.",
             "return sum(range({k}, n, {k}))", {"k": tuple(range(2, 10))}, lambda rng: (rng.randint(0, 100),)),
    Template("repeat_word", "word", "Return word repeated {k} times, with {sep!r} between the copies.",
             "return {sep!r}.join([word] * {k})", {"k": tuple(range(2, 6)), "sep": ("-", ", ", " ", "+", "/", "")},
             lambda rng: (rng.choice(WORDS),)),
    Template("power_sum", "numbers", "Return the sum of the numbers in the list numbers, each raised to the power {p}.",
             "return sum(n ** {p} for n in numbers)", {"p": (2, 3, 4)}, lambda rng: (_ints(rng, -9, 9, 6),)),
    Template("shift_letters", "text", "Return text with each lowercase letter moved {k} places forward in the "
             "alphabet, wrapping from z to a; other characters stay as they are.",
             "return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if 'a' <= c <= 'z' else c for c in text)",
             {"k": tuple(range(1, 26))}, lambda rng: (_text(rng),)),
    Template("largest_below", "numbers", "Return the largest number in the list numbers that is smaller than {limit}, "
             "or None when there is none.", "return max((n for n in numbers if n < {limit}), default=None)",
             {"limit": tuple(range(-10, 31))}, lambda rng: (_ints(rng, -30, 40, 7),)),
    Template("every_nth", "items", "Return items[0], items[{k}], items[2 * {k}] and so on, as a list.",
             "return items[::{k}]", {"k": tuple(range(2, 6))}, lambda rng: (_ints(rng, 0, 99, 12),)),
    Template("digit_sum", "n", "Return the sum of the decimal digits of the non-negative integer n, times {m}.",
             "return sum(int(d) for d in str(n)) * {m}", {"m": tuple(range(1, 10))},
             lambda rng: (rng.randint(0, 10**6),)),
    Template("count_letter", "text", "Return how many times the letter {c!r} occurs in text, upper or lower case.",
             "return text.lower().count({c!r})", {"c": tuple("aeilmnoprst")}, lambda rng: (_text(rng),)),
    Template("fizz_buzz", "n", "Return 'Fizz' if n is divisible by {a}, 'Buzz' if it is divisible by {b}, "
             "'FizzBuzz' if by both, else str(n).",
             "return 'FizzBuzz' if n % {a} == 0 and n % {b} == 0 else 'Fizz' if n % {a} == 0 else 'Buzz' "
             "if n % {b} == 0 else str(n)", {"a": (2, 3, 4), "b": (5, 6, 7)}, lambda rng: (rng.randint(1, 100),)),
)
_BY_NAME = {template.name: template for template in TEMPLATES}


@dataclass(frozen=True)
class Problem:
    template: Template
    values: tuple  # the constants, in the template's order

    @property
    def constants(self) -> dict[str, Any]:
        return dict(zip(self.template.constants, self.values))

    @property
    def key(self) -> str:
        return f"{self.template.name}{self.values}"

    def prompt(self) -> str:
        return f"{INSTRUCTION}\n\n{self.template.stub(self.template.doc.format(**self.constants))}"

    def completion(self, constants: dict[str, Any] | None = None) -> str:
        """The reference solution (or, with other `constants`, a plausible wrong one)."""
        body = self.template.body.format(**(constants or self.constants))
        return f"```python\ndef {self.template.name}({self.template.parameters}):\n    {body}\n```"

    def tests(self, n: int = 6) -> str:
        """`n` asserts, the same for every caller: the arguments are drawn from a generator seeded by the problem,
        the expected values computed by the reference solution (our own code, run here)."""
        namespace: dict[str, Any] = {}
        exec(last_python_block(self.completion()), namespace)  # noqa: S102 - the task's own reference solution
        function = namespace[self.template.name]
        rng = random.Random(f"code/tests/{self.key}")
        lines = []
        for _ in range(n):
            arguments = self.template.arguments(rng)
            lines.append(f"assert {self.template.name}({', '.join(map(repr, arguments))}) == {function(*arguments)!r}")
        return "\n".join(lines)


def problem_from_prompt(prompt: str) -> Problem:
    """The problem whose stub is (last) in `prompt`; ValueError if there is none."""
    found = []
    for template in TEMPLATES:
        constants = template.parse(prompt)
        if constants is not None:
            found.append((prompt.rfind(f"def {template.name}("), template, constants))
    if not found:
        raise ValueError(f"no code problem found in prompt {prompt[-200:]!r}; pass a `tests` column")
    _, template, constants = max(found, key=lambda item: item[0])
    return Problem(template, tuple(constants[name] for name in template.constants))


@register_task("code")
@dataclass
class CodeTask(Task):
    """Small Python functions from docstrings, checked by hidden asserts run in the sandbox.

    Args:
        wrong_fraction: share of SFT demonstrations that are wrong (a constant off), for mixed quality.
        eval_fraction: share of the problems held out for `eval_prompts`.
        seconds: wall-time limit of one completion's run.
        isolation: the sandbox's isolation ("auto", "strict", "fallback", "off"; see `tandem.sandbox`).
        workers: sandbox runs at once (0: min(cores, 8)).
    """

    wrong_fraction: float = 0.2
    eval_fraction: float = 0.1
    seconds: float = 2.0
    isolation: str | None = None
    workers: int = 0

    eval_temperature: ClassVar[float] = 0.0  # pass@1 of the greedy completion

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {self.eval_fraction}")
        if not 0.0 <= self.wrong_fraction <= 1.0:
            raise ValueError(f"wrong_fraction must lie in [0, 1], got {self.wrong_fraction}")

    @property
    def max_new_tokens(self) -> int:
        """Room for the longest reference solution even at one token a character."""
        return max(len(Problem(t, tuple(max(c, key=lambda v: len(str(v))) for c in t.constants.values())).completion())
                   for t in TEMPLATES) + 8

    @cached_property
    def scorer(self) -> CodeScorer:
        """Built on first use: data generation needs no sandbox, only the reward does."""
        scorer = CodeScorer(SandboxLimits(seconds=self.seconds, isolation=self.isolation), self.workers)
        scorer.check()
        return scorer

    # ----- problems ---------------------------------------------------------

    def _sample_problem(self, rng: random.Random, held_out: bool) -> Problem:
        for _ in range(100_000):
            template = rng.choice(TEMPLATES)
            problem = Problem(template, tuple(rng.choice(choices) for choices in template.constants.values()))
            if is_held_out(problem.key, self.eval_fraction) == held_out:
                return problem
        raise RuntimeError("could not sample a problem from the requested split")

    @staticmethod
    def _wrong_completion(problem: Problem, rng: random.Random) -> str:
        """A plausible wrong solution: one constant changed."""
        name = rng.choice(list(problem.template.constants))
        others = [value for value in problem.template.constants[name] if value != problem.constants[name]]
        return problem.completion({**problem.constants, name: rng.choice(others)})

    # ----- data -------------------------------------------------------------

    def pretrain_corpus(self, n: int, seed: int = 0) -> list[str]:
        """Functions with their docstrings and a few asserts, as a code file shows them."""
        rng = self._rng("pretrain", seed)
        documents = []
        for _ in range(n):
            pieces = []
            for _ in range(rng.randint(1, 3)):
                problem = self._sample_problem(rng, held_out=False)
                doc = problem.template.doc.format(**problem.constants)
                body = problem.template.body.format(**problem.constants)
                pieces.append(f"{problem.template.stub(doc)}    {body}\n\n{problem.tests(2)}\n")
            documents.append("\n\n".join(pieces))
        return documents

    def sft_examples(self, n: int, seed: int = 0) -> list[dict]:
        rng = self._rng("sft", seed)
        examples = []
        for _ in range(n):
            problem = self._sample_problem(rng, held_out=False)
            wrong = rng.random() < self.wrong_fraction
            examples.append({"prompt": problem.prompt(), "tests": problem.tests(),  # for --reward verifier:code
                             "completion": self._wrong_completion(problem, rng) if wrong else problem.completion()})
        return examples

    def _candidate_pair(self, rng: random.Random, held_out: bool = False) -> tuple[str, str, str, dict[str, Any]]:
        problem = self._sample_problem(rng, held_out=held_out)
        signature = f"def {problem.template.name}({problem.template.parameters}):"
        rejected = rng.choice([self._wrong_completion(problem, rng), self._wrong_completion(problem, rng),
                               f"```python\n{signature}\n    pass\n```", "I am not sure how to write it."])
        return problem.prompt(), problem.completion(), rejected, {"tests": problem.tests()}

    def eval_prompts(self, n: int, seed: int = 0) -> list[dict]:
        """Held-out problems with their `tests`; distinct while the held-out problems last."""
        rng = self._rng("eval", seed)
        problems = distinct_draws(lambda: self._sample_problem(rng, held_out=True), lambda problem: problem.key, n)
        return [{"prompt": problem.prompt(), "tests": problem.tests()} for problem in problems]

    # ----- reward -----------------------------------------------------------

    def gold_reward(self, prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        """1.0 when the completion's last ```python block passes the problem's hidden asserts, else 0.0.

        The asserts come from the `tests` column when given (None in a row: not given), else from the problem
        the prompt states (see `problem_from_prompt`)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        given = columns.get("tests") or [None] * len(prompts)
        tests = [test if test is not None else problem_from_prompt(prompt).tests() for prompt, test in zip(prompts, given)]
        return self.scorer(completions, tests)
