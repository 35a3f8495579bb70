"""The `Task` interface every built-in task implements, and the task registry.

A task generates all of its own data (pretraining text, demonstrations,
preference pairs, unpaired labelled examples, held-out evaluation prompts) and
owns a deterministic *gold* reward, so alignment can be measured honestly,
offline, and reproduced from a seed.

Two guarantees every task keeps:

- **Determinism.** Each method draws from its own `random.Random` built from
  (task name, purpose, seed); the global RNG is never touched.
- **Held-out evaluation.** Prompts are split into train and eval by a stable
  hash of the underlying problem (`is_held_out`), so eval prompts never
  appear in training data, by construction rather than by chance.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator, TypeVar

from tandem.registry import registrar
from tandem.specs import parse_options

TASKS: dict[str, type["Task"]] = {}

TaskClass = TypeVar("TaskClass", bound=type["Task"])


_register = registrar(TASKS, "task name")


def register_task(name: str) -> Callable[[TaskClass], TaskClass]:
    """Class decorator: make a task available as `get_task(name)`."""

    def decorator(cls: TaskClass) -> TaskClass:
        cls = _register(name)(cls)
        cls.name = name
        return cls

    return decorator


def get_task(name: str, **kwargs: Any) -> "Task":
    """Build the registered task `name`; keyword arguments go to its constructor.

    `name` may carry options as on the command line: `arithmetic:digits=1:operations=+`. A task with a
    `positional_option` also takes its value bare, first: `rg:leg_counting:size=100` sets dataset=leg_counting.
    """
    if ":" in name:
        spec = name
        name, _, options = name.partition(":")
        positional = TASKS[name].positional_option if name in TASKS else None
        first, _, rest = options.partition(":")
        if positional and first and "=" not in first:
            kwargs = {positional: first, **kwargs}
            options = rest
        kwargs = {**parse_options(options, f"task {spec!r}"), **kwargs}
    if name not in TASKS:
        known = ", ".join(sorted(TASKS)) or "(none registered)"
        raise ValueError(f"unknown task {name!r}; known tasks: {known}")
    return TASKS[name](**kwargs)


def check_task_spec(spec: str) -> str:
    """`spec` if its task name is registered (options are checked when the task is built), else a ValueError."""
    name = spec.partition(":")[0]
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return spec


def stable_unit_hash(key: str) -> float:
    """Map a string to [0, 1) with a hash that is the same in every process and Python version."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_held_out(key: str, eval_fraction: float) -> bool:
    """True when the problem identified by `key` belongs to the held-out eval split."""
    return stable_unit_hash(key) < eval_fraction


def distinct_draws(draw: Callable[[], Any], key: Callable[[Any], Any], n: int) -> list:
    """`n` results of `draw()`, distinct by `key` while the space allows (after 50 x n draws, repeats are kept)."""
    seen: set = set()
    found, attempts = [], 0
    while len(found) < n:
        attempts += 1
        item = draw()
        if key(item) in seen and attempts < 50 * n:
            continue
        seen.add(key(item))
        found.append(item)
    return found


class Task(ABC):
    """A self-contained task: data generators plus a gold reward.

    Subclasses implement the abstract methods plus `_candidate_pair`; the base
    class turns candidate pairs into gold-ranked preference pairs and unpaired
    examples, so label noise and tie handling are written once.
    """

    name: ClassVar[str] = "task"
    max_new_tokens: int
    # `unpaired_examples` labels a completion desirable when its gold reward exceeds this.
    label_threshold: ClassVar[float] = 0.5
    # How held-out evaluation decodes: 0 (greedy) for tasks scored by accuracy, 1 to measure the policy itself.
    eval_temperature: ClassVar[float] = 1.0
    # A constructor option whose value may come first, bare, in a task spec (`rg:DATASET:k=v`); see get_task.
    positional_option: ClassVar[str | None] = None

    @classmethod
    def positional_choices(cls) -> list[str]:
        """The values `positional_option` can take, for `tandem tasks` to list ([]: not enumerable)."""
        return []

    @abstractmethod
    def pretrain_corpus(self, n: int, seed: int = 0) -> list[str]:
        """`n` raw documents for next-token pretraining (no prompt/completion format)."""

    @abstractmethod
    def sft_examples(self, n: int, seed: int = 0) -> list[dict]:
        """`n` demonstrations `{"prompt", "completion"}` of mixed quality."""

    @abstractmethod
    def eval_prompts(self, n: int, seed: int = 0) -> list[dict]:
        """`n` held-out prompts `{"prompt", **columns}`; never overlapping training prompts."""

    @abstractmethod
    def gold_reward(self, prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        """Deterministic gold reward of each completion; `columns` are extra eval columns as lists."""

    @abstractmethod
    def _candidate_pair(self, rng: random.Random, held_out: bool = False) -> tuple[str, str, str, dict[str, Any]]:
        """One prompt (a training prompt, or a held-out one) with two candidate completions: (prompt, a, b, columns).

        `columns` holds the extra per-prompt values `gold_reward` accepts
        (e.g. {"answer": 85}); the base class ranks a and b by gold reward.
        """

    def preference_pairs(self, n: int, seed: int = 0, label_noise: float = 0.0, held_out: bool = False) -> list[dict]:
        """`n` pairs `{"prompt", "chosen", "rejected"}` with chosen = higher gold reward.

        Ties are skipped. With probability `label_noise` a pair's chosen and
        rejected are swapped, simulating noisy human labels (robust/cDPO).
        `held_out=True` draws the prompts from the evaluation split, for measuring
        reward-model accuracy on prompts never trained on.
        """
        if not 0.0 <= label_noise <= 1.0:
            raise ValueError(f"label_noise must lie in [0, 1], got {label_noise}")
        rng = self._rng("preference", seed)
        pairs = []
        for prompt, better, worse, _ in self._gold_ranked_pairs(n, rng, held_out):
            if rng.random() < label_noise:
                better, worse = worse, better
            pairs.append({"prompt": prompt, "chosen": better, "rejected": worse})
        return pairs

    def unpaired_examples(self, n: int, seed: int = 0) -> list[dict]:
        """`n` examples `{"prompt", "completion", "label"}` for KTO-style training.

        One side of a gold-ranked candidate pair is kept at random; `label` is
        True when its gold reward exceeds `label_threshold`.
        """
        rng = self._rng("unpaired", seed)
        examples = []
        for prompt, better, worse, (gold_better, gold_worse) in self._gold_ranked_pairs(n, rng):
            completion, gold = (better, gold_better) if rng.random() < 0.5 else (worse, gold_worse)
            examples.append({"prompt": prompt, "completion": completion, "label": gold > self.label_threshold})
        return examples

    def _gold_ranked_pairs(
        self, n: int, rng: random.Random, held_out: bool = False
    ) -> Iterator[tuple[str, str, str, tuple[float, float]]]:
        """Yield `n` (prompt, better, worse, (gold_better, gold_worse)), skipping gold ties."""
        produced, attempts = 0, 0
        while produced < n:
            attempts += 1
            if attempts > 100 * n + 1000:
                raise RuntimeError(f"{self.name}: could not draw {n} untied candidate pairs")
            prompt, first, second, columns = self._candidate_pair(rng, held_out)
            listed = {key: [value, value] for key, value in columns.items()}
            gold_first, gold_second = self.gold_reward([prompt, prompt], [first, second], **listed)
            if abs(gold_first - gold_second) < 1e-9:
                continue
            if gold_first < gold_second:
                first, second, gold_first, gold_second = second, first, gold_second, gold_first
            produced += 1
            yield prompt, first, second, (gold_first, gold_second)

    def _rng(self, purpose: str, seed: int) -> random.Random:
        """A private RNG per (task, purpose, seed); string seeds hash identically in every process."""
        return random.Random(f"{self.name}/{purpose}/{seed}")
