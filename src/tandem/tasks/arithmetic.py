"""Arithmetic with a checkable answer: the built-in task for RLVR and one-shot RLVR.

Prompt and completion follow the GSM8K `#### N` convention so generic
numeric-answer verifiers can parse the final answer::

    prompt:     "Question: What is 37 + 48?\\nAnswer:"
    completion: " 37 + 48 = 85\\n#### 85"

The pretraining corpus shows the same numbers and equations in other forms
("The sum of 37 and 48 is 85.", "37 + 48 = 85", some with wrong results) so a
model learns the tokens but not the question/answer format, which SFT teaches.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from tandem.tasks.base import Task, distinct_draws, is_held_out, register_task

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}

_QUESTION = re.compile(r"(-?\d+)\s*([+\-*])\s*(-?\d+)\s*\?")
_FINAL_ANSWER = re.compile(r"\s*(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)")
_ANY_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

Problem = tuple[int, str, int]  # (left operand, operation, right operand)


def extract_final_answer(completion: str) -> float | None:
    """The number after the last `####`, else the last number in the text, else None."""
    marker = completion.rfind("####")
    if marker >= 0:
        match = _FINAL_ANSWER.match(completion, marker + 4)
        if match:
            return float(match.group(1).replace(",", ""))
    numbers = _ANY_NUMBER.findall(completion)
    return float(numbers[-1]) if numbers else None


def answer_from_prompt(prompt: str) -> int:
    """Solve the last `a op b ?` question in a prompt; raise if there is none."""
    matches = _QUESTION.findall(prompt)
    if not matches:
        raise ValueError(f"no arithmetic question found in prompt {prompt!r}; pass an `answer` column")
    left, operation, right = matches[-1]
    return OPERATIONS[operation](int(left), int(right))


@register_task("arithmetic")
@dataclass
class ArithmeticTask(Task):
    """`a op b` questions on `digits`-digit numbers; gold reward 1.0 iff the final answer is right.

    Args:
        digits: digits of each operand (of the left one for `*`).
        multiplier_digits: digits of the right operand of `*` (1: times a single digit; 3 with digits=3: 3-digit
            by 3-digit products, which a small model cannot do in its head but can with a calculator tool).
        operations: which of "+", "-", "*" to ask about.
        wrong_fraction: share of SFT demonstrations whose answer is wrong (mixed quality).
        eval_fraction: share of the problem space held out for `eval_prompts`.
        corpus_error_rate: share of pretraining equations with a wrong result.
    """

    digits: int = 2
    multiplier_digits: int = 1
    operations: tuple[str, ...] = ("+", "-")
    wrong_fraction: float = 0.2
    eval_fraction: float = 0.1
    corpus_error_rate: float = 0.15

    def __post_init__(self) -> None:
        if self.digits < 1 or self.multiplier_digits < 1:
            raise ValueError(f"digits and multiplier_digits must be >= 1, got {self.digits}, {self.multiplier_digits}")
        self.operations = tuple(self.operations)
        unknown = set(self.operations) - set(OPERATIONS)
        if unknown or not self.operations:
            raise ValueError(f"operations must be a non-empty subset of {sorted(OPERATIONS)}, got {self.operations}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must lie in (0, 1), got {self.eval_fraction}")

    eval_temperature: ClassVar[float] = 0.0  # exact-match accuracy of the greedy answer

    @property
    def max_new_tokens(self) -> int:
        """Room for " a op b = c\\n#### c" even if every digit is its own token (c has up to digits +
        multiplier_digits digits)."""
        return 16 + 4 * self.digits + 2 * (self.multiplier_digits - 1)

    # ----- problems ---------------------------------------------------------

    def _sample_problem(self, rng: random.Random, held_out: bool) -> Problem:
        low = 0 if self.digits == 1 else 10 ** (self.digits - 1)
        high = 10**self.digits - 1
        for _ in range(100_000):
            operation = rng.choice(self.operations)
            left = rng.randint(low, high)
            right = self._multiplier(rng) if operation == "*" else rng.randint(low, high)
            if is_held_out(f"{left} {operation} {right}", self.eval_fraction) == held_out:
                return left, operation, right
        raise RuntimeError("could not sample a problem from the requested split")

    def _multiplier(self, rng: random.Random) -> int:
        if self.multiplier_digits == 1:
            return rng.randint(2, 9)
        return rng.randint(10 ** (self.multiplier_digits - 1), 10**self.multiplier_digits - 1)

    @staticmethod
    def format_prompt(problem: Problem) -> str:
        left, operation, right = problem
        return f"Question: What is {left} {operation} {right}?\nAnswer:"

    @staticmethod
    def format_completion(problem: Problem, result: int) -> str:
        left, operation, right = problem
        return f" {left} {operation} {right} = {result}\n#### {result}"

    @staticmethod
    def solve(problem: Problem) -> int:
        left, operation, right = problem
        return OPERATIONS[operation](left, right)

    @staticmethod
    def _near_miss(correct: int, rng: random.Random) -> int:
        """A plausible wrong result: off by one, two, or a carry (ten)."""
        return correct + rng.choice([-10, -2, -1, 1, 2, 10])

    # ----- data -------------------------------------------------------------

    def pretrain_corpus(self, n: int, seed: int = 0) -> list[str]:
        rng = self._rng("pretrain", seed)
        return ["\n".join(self._corpus_line(rng) for _ in range(rng.randint(3, 8))) for _ in range(n)]

    def _corpus_line(self, rng: random.Random) -> str:
        problem = self._sample_problem(rng, held_out=False)
        left, operation, right = problem
        correct = self.solve(problem)
        result = self._near_miss(correct, rng) if rng.random() < self.corpus_error_rate else correct
        word = {"+": "plus", "-": "minus", "*": "times"}[operation]
        templates = [
            f"{left} {operation} {right} = {result}",
            f"{left} {word} {right} is {result}.",
            f"What is {left} {word} {right}? It is {result}.",
            f"Note #{rng.randint(1, 9)}: {left} {operation} {right} = {result}",
            f"{left} is {'more than' if left > right else 'less than' if left < right else 'equal to'} {right}.",
            f"Counting up: {left}, {left + 1}, {left + 2}.",
            f"The answer to that question was {result}.",
        ]
        if operation == "+":
            templates.append(f"The sum of {left} and {right} is {result}.")
        if operation == "-":
            templates.append(f"The difference between {left} and {right} is {result}.")
        return rng.choice(templates)

    def sft_examples(self, n: int, seed: int = 0) -> list[dict]:
        rng = self._rng("sft", seed)
        examples = []
        for _ in range(n):
            problem = self._sample_problem(rng, held_out=False)
            correct = self.solve(problem)
            result = self._near_miss(correct, rng) if rng.random() < self.wrong_fraction else correct
            examples.append({"prompt": self.format_prompt(problem), "completion": self.format_completion(problem, result)})
        return examples

    def _candidate_pair(self, rng: random.Random, held_out: bool = False) -> tuple[str, str, str, dict[str, Any]]:
        problem = self._sample_problem(rng, held_out=held_out)
        left, operation, right = problem
        correct = self.solve(problem)
        wrong = self._near_miss(correct, rng)
        rejected_options = [
            self.format_completion(problem, wrong),  # consistent arithmetic slip
            f" {left} {operation} {right} = {correct}\n#### {wrong}",  # right working, wrong final answer
            f" {left} {operation} {right} = {wrong}",  # slip and no `####` line
            " I am not sure.",  # no answer at all
        ]
        return self.format_prompt(problem), self.format_completion(problem, correct), rng.choice(rejected_options), {"answer": correct}

    def eval_prompts(self, n: int, seed: int = 0) -> list[dict]:
        """Held-out questions with their `answer`; distinct while the held-out space allows."""
        rng = self._rng("eval", seed)
        problems = distinct_draws(lambda: self._sample_problem(rng, held_out=True), lambda problem: problem, n)
        return [{"prompt": self.format_prompt(problem), "answer": self.solve(problem)} for problem in problems]

    # ----- reward -----------------------------------------------------------

    def gold_reward(self, prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        """1.0 if the completion's final answer (see `extract_final_answer`) equals the answer, else 0.0.

        The answer comes from the `answer` column when given (per row; None
        means "not given"), else it is computed from the question in the
        prompt. Other columns are ignored.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        answers = columns.get("answer")
        if answers is None:
            answers = [None] * len(prompts)
        rewards = []
        for prompt, completion, answer in zip(prompts, completions, answers):
            if answer is None:
                answer = answer_from_prompt(prompt)
            predicted = extract_final_answer(completion)
            rewards.append(float(predicted is not None and abs(predicted - float(answer)) < 1e-6))
        return rewards
