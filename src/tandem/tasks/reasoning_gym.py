"""reasoning-gym's procedural datasets as tasks: `rg:DATASET:option=value`, scored by reasoning-gym itself.

    task = get_task("rg:leg_counting:size=1000:seed=3:max_animals=4")
    task.gold_reward([prompt], ["... <answer>292</answer>"])                 # [1.0] when 292 is right

reasoning-gym (Open-Thought, https://github.com/open-thought/reasoning-gym) generates question/answer
pairs with verifiers for ~100 tasks (arithmetic, algebra, logic, games, graphs, ...). `size` and `seed`
and every option the task does not take itself go to `reasoning_gym.create_dataset(DATASET, ...)`;
`tandem tasks` lists the dataset names.

    prompt:     "<question>\\n<instruction: final answer between <answer> and </answer> tags>\\n"
    completion: "<answer>-4</answer>"

The gold reward is the dataset's own `score_answer(answer, entry)` (1.0 right, 0.0 wrong; some datasets
give partial credit in between), on the answer `extract_completion_answer` reads from the completion.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
from functools import cached_property
from typing import Any, ClassVar

from tandem.tasks.base import Task, register_task

INSTRUCTION = "Give your final answer between <answer> and </answer> tags, with nothing else inside them."

INSTALL_HINT = "pip install reasoning-gym (or pip install 'tandem[reasoning]')"


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError as error:
        raise ModuleNotFoundError(f"the rg: tasks need the reasoning-gym package: {INSTALL_HINT}") from error
    return reasoning_gym


def dataset_names() -> list[str]:
    """Every reasoning-gym dataset name, sorted ([] when reasoning-gym is not installed)."""
    try:
        return sorted(_reasoning_gym().factory.DATASETS)
    except ModuleNotFoundError:
        return []


def extract_completion_answer(completion: str) -> str | None:
    """The answer a completion gives, read in this order:

    1. inside the last `<answer>...</answer>` (reasoning-gym's `utils.extract_answer`, stripped);
    2. after the last `####` (the GSM8K convention), to the end of that line;
    3. the last non-empty line.
    None when the completion is empty.
    """
    from reasoning_gym.utils import extract_answer

    tagged = extract_answer(completion, tag_name="answer", strip=True)
    if tagged is not None:
        return tagged
    marker = completion.rfind("####")
    if marker >= 0:
        rest = completion[marker + 4 :].strip()
        return rest.splitlines()[0].strip() if rest else ""
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    return lines[-1] if lines else None


@register_task("rg")
class ReasoningGymTask(Task):
    """reasoning-gym datasets (rg:DATASET:option=value), gold reward = the dataset's own scorer.

    Args:
        dataset: reasoning-gym dataset name (`rg:NAME` on the command line).
        size: training questions (reasoning-gym's `size`).
        seed: reasoning-gym's `seed` of the training questions.
        eval_size: held-out questions generated for `eval_prompts` (before dropping any that is also a
            training question).
        max_new_tokens: longest completion; default: room for the longest gold answer in tags, one token
            per character. Raise it to let a model reason before answering.
        instruction: the answer-format line appended to every question.
        **options: passed through to `reasoning_gym.create_dataset(dataset, ...)`.

    Held-out split: reasoning-gym draws question i from `Random(seed + i)`, so the evaluation questions
    come from seeds `seed + size ...` (disjoint from the training seeds), and any evaluation question whose
    text is also a training question is dropped; train and eval never overlap.
    """

    positional_option: ClassVar[str | None] = "dataset"
    eval_temperature: ClassVar[float] = 0.0  # accuracy of the greedy answer

    def __init__(self, dataset: str = "basic_arithmetic", size: int = 500, seed: int = 0, eval_size: int = 200,
                 max_new_tokens: int | None = None, instruction: str = INSTRUCTION, **options: Any) -> None:
        reasoning_gym = _reasoning_gym()
        known = reasoning_gym.factory.DATASETS
        if dataset not in known:
            close = difflib.get_close_matches(dataset, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown reasoning-gym dataset {dataset!r}{hint}; `tandem tasks` lists all {len(known)} names")
        if size < 1 or eval_size < 1:
            raise ValueError(f"size and eval_size must be >= 1, got size={size}, eval_size={eval_size}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.dataset, self.size, self.seed, self.eval_size = dataset, size, seed, eval_size
        self.instruction, self.options, self._max_new_tokens = instruction, options, max_new_tokens
        self._train = self._create(size=size, seed=seed)
        self._eval = self._create(size=eval_size, seed=seed + size)

    def _create(self, **split):
        try:
            return _reasoning_gym().create_dataset(self.dataset, **self.options, **split)
        except TypeError as error:  # an option the dataset's config does not have
            config = _reasoning_gym().factory.DATASETS[self.dataset][1]
            fields = ", ".join(f.name for f in dataclasses.fields(config) if f.name not in ("size", "seed"))
            raise ValueError(f"reasoning-gym dataset {self.dataset!r}: {error}; its options: {fields}") from error

    @classmethod
    def positional_choices(cls) -> list[str]:
        return dataset_names()

    def _rng(self, purpose: str, seed: int) -> random.Random:
        return random.Random(f"rg/{self.dataset}/{purpose}/{seed}")

    # ----- questions ----------------------------------------------------------

    def format_prompt(self, question: str) -> str:
        return f"{question.rstrip()}\n{self.instruction}\n"

    @staticmethod
    def format_completion(answer: str) -> str:
        return f"<answer>{answer}</answer>"

    @cached_property
    def train_entries(self) -> list[dict]:
        return list(self._train)

    @cached_property
    def eval_entries(self) -> list[dict]:
        """The held-out entries: distinct questions, none of them a training question."""
        seen = {entry["question"] for entry in self.train_entries}
        entries = []
        for entry in self._eval:
            if entry["question"] not in seen:
                seen.add(entry["question"])
                entries.append(entry)
        if not entries:
            raise RuntimeError(f"rg:{self.dataset}: every held-out question is also a training question")
        return entries

    @cached_property
    def _entry_by_prompt(self) -> dict[str, dict]:
        return {self.format_prompt(entry["question"]): entry for entry in self.train_entries + self.eval_entries}

    @property
    def max_new_tokens(self) -> int:
        if self._max_new_tokens is not None:
            return self._max_new_tokens
        longest = max(len(str(entry["answer"])) for entry in self.train_entries + self.eval_entries)
        return len(self.format_completion("")) + longest + 4

    # ----- data ---------------------------------------------------------------

    def pretrain_corpus(self, n: int, seed: int = 0) -> list[str]:
        rng = self._rng("pretrain", seed)
        return ["\n".join(f"{entry['question'].strip()} The answer is {entry['answer']}."
                          for entry in rng.choices(self.train_entries, k=rng.randint(1, 4))) for _ in range(n)]

    def sft_examples(self, n: int, seed: int = 0) -> list[dict]:
        """`n` training questions answered with the gold answer (all correct), in a seeded order.

        The training questions are shuffled once per pass; `n` larger than `size` repeats them.
        """
        rng = self._rng("sft", seed)
        examples: list[dict] = []
        while len(examples) < n:
            order = list(self.train_entries)
            rng.shuffle(order)
            examples += [{"prompt": self.format_prompt(entry["question"]), "completion": self.format_completion(entry["answer"])}
                         for entry in order[: n - len(examples)]]
        return examples

    def eval_prompts(self, n: int, seed: int = 0) -> list[dict]:
        """`n` distinct held-out questions with their `answer`, in a seeded order; at most the held-out split's size."""
        entries = self.eval_entries
        if n > len(entries):
            raise ValueError(f"rg:{self.dataset} has {len(entries)} held-out questions, {n} asked; "
                             f"raise eval_size (now {self.eval_size})")
        order = list(entries)
        self._rng("eval", seed).shuffle(order)
        return [{"prompt": self.format_prompt(entry["question"]), "answer": str(entry["answer"])} for entry in order[:n]]

    def _candidate_pair(self, rng: random.Random, held_out: bool = False) -> tuple[str, str, str, dict[str, Any]]:
        """chosen: the gold answer; rejected: another question's answer, or no answer at all."""
        entries = self.eval_entries if held_out else self.train_entries
        entry, other = rng.choice(entries), rng.choice(entries)
        rejected = self.format_completion(other["answer"]) if rng.random() < 0.75 else "I am not sure."
        return self.format_prompt(entry["question"]), self.format_completion(entry["answer"]), rejected, {}

    # ----- reward -------------------------------------------------------------

    def _entry(self, prompt: str, answer: Any, metadata: Any) -> dict:
        entry = self._entry_by_prompt.get(prompt)
        if entry is None:  # a prompt rendered into a chat template still contains the plain one
            entry = next((e for key, e in self._entry_by_prompt.items() if key in prompt), None)
        if entry is None and answer is not None:
            entry = {"question": prompt, "answer": str(answer), "metadata": metadata or {}}
        if entry is None:
            raise ValueError(f"rg:{self.dataset}: prompt {prompt[:80]!r}... is none of this task's questions; "
                             "pass its gold `answer` (and reasoning-gym `metadata`) as columns")
        return entry

    def gold_reward(self, prompts: list[str], completions: list[str], **columns: list) -> list[float]:
        """The dataset's `score_answer(extract_completion_answer(completion), entry)` for each completion.

        The entry is looked up by its prompt (also inside a longer, templated prompt); a prompt that is not
        one of this task's questions needs an `answer` column (and a `metadata` column for the datasets
        whose scorer reads it).
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        answers = columns.get("answer") or [None] * len(prompts)
        metadata = columns.get("metadata") or [None] * len(prompts)
        return [float(self._train.score_answer(extract_completion_answer(completion), self._entry(prompt, answer, meta)))
                for prompt, completion, answer, meta in zip(prompts, completions, answers, metadata, strict=True)]
