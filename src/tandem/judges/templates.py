"""Judge prompt templates: YAML files holding the instruction, the answer labels and optional in-context examples.

A template turns one question (a prompt and one response to score, or two to compare) into chat messages:

    system                      (optional)
    user: example 1             assistant: [reasoning] [Feedback: ...] Verdict: 7      (optional examples)
    ...
    user: instruction + answer_instruction   (or + cot_instruction with chain-of-thought)

The judge's answer is the label written after `verdict_prefix`: a digit of `scale` for "score" templates
(value (digit - low) / (high - low) in [0, 1]), or `labels[0]` / `labels[1]` for "compare" templates
(value 1 when the response shown first is better, 0 otherwise). Built-in templates live in
`tandem/judges/templates/*.yaml`; any other YAML file with the same fields works (`load_template(path)`).
"""

from __future__ import annotations

import hashlib
import string
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TEMPLATE_DIR = Path(__file__).parent / "templates"
RESPONSE_FIELDS = {"score": ("prompt", "response"), "compare": ("prompt", "response_a", "response_b")}
SHARED_FIELDS = ("low", "high", "label_a", "label_b", "verdict_prefix")


class TemplateError(ValueError):
    """A judge template file is missing, unreadable, or has a bad field (the message names the file and field)."""


class JudgeExample(BaseModel):
    """One in-context example: the question's fields, optional reasoning and verbal feedback, and the verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    response: str | None = None
    response_a: str | None = None
    response_b: str | None = None
    reasoning: str | None = Field(None, description="Shown before the verdict when chain-of-thought is on.")
    feedback: str | None = Field(None, description="Verbal feedback on the response, shown as 'Feedback: ...'.")
    verdict: str

    @model_validator(mode="before")
    @classmethod
    def _verdict_as_text(cls, values):
        if isinstance(values, dict) and isinstance(values.get("verdict"), int):
            values = {**values, "verdict": str(values["verdict"])}
        return values


class JudgeTemplate(BaseModel):
    """What a judge is asked and how its answer is read; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["score", "compare"]
    instruction: str = Field(description="The question; placeholders {prompt} and {response}, or {response_a} and {response_b}.")
    system: str | None = None
    answer_instruction: str = 'Reply with only "{verdict_prefix} <answer>".'
    cot_instruction: str = 'First explain your reasoning briefly, then end with a line "{verdict_prefix} <answer>".'
    verdict_prefix: str = "Verdict:"
    feedback_prefix: str = "Feedback:"
    scale: tuple[int, int] = (0, 9)
    labels: tuple[str, str] = ("A", "B")
    examples: tuple[JudgeExample, ...] = ()
    source: str = Field("<memory>", exclude=True, description="Where the template was read from (for messages).")

    @model_validator(mode="after")
    def _check(self) -> JudgeTemplate:
        low, high = self.scale
        if self.kind == "score" and not low < high:
            raise ValueError(f"scale must be [low, high] with low < high, got {list(self.scale)}")
        if self.labels[0] == self.labels[1] or not all(label.strip() for label in self.labels):
            raise ValueError(f"labels must be two different non-empty strings, got {list(self.labels)}")
        allowed = set(RESPONSE_FIELDS[self.kind]) | set(SHARED_FIELDS)
        for name in ("instruction", "answer_instruction", "cot_instruction", "system"):
            text = getattr(self, name) or ""
            try:
                used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
            except ValueError as error:
                raise ValueError(f"{name}: {error} (write literal braces as {{{{ and }}}})") from None
            unknown = used - allowed
            if unknown:
                raise ValueError(f"{name} uses unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
            if name == "instruction":
                missing = set(RESPONSE_FIELDS[self.kind]) - used
                if missing:
                    raise ValueError(f"a {self.kind} instruction must contain {sorted('{' + m + '}' for m in missing)}")
        for number, example in enumerate(self.examples, start=1):
            for field in RESPONSE_FIELDS[self.kind]:
                if getattr(example, field) is None:
                    raise ValueError(f"examples[{number}] of a {self.kind} template needs '{field}'")
            if example.verdict not in self.answer_labels:
                raise ValueError(f"examples[{number}].verdict {example.verdict!r} is not one of {self.answer_labels}")
        return self

    @cached_property
    def answer_labels(self) -> list[str]:
        """The strings the judge may answer with."""
        if self.kind == "compare":
            return list(self.labels)
        return [str(k) for k in range(self.scale[0], self.scale[1] + 1)]

    @cached_property
    def label_values(self) -> list[float]:
        """The value of each answer label: (k - low) / (high - low) for scores; 1 (first shown better) / 0 for pairs."""
        if self.kind == "compare":
            return [1.0, 0.0]
        low, high = self.scale
        return [(k - low) / (high - low) for k in range(low, high + 1)]

    @cached_property
    def fingerprint(self) -> str:
        """A hash of everything that changes what the judge is asked (part of the verdict cache key)."""
        return hashlib.sha256(self.model_dump_json().encode("utf-8")).hexdigest()[:16]

    def _fill(self, text: str, fields: dict[str, str]) -> str:
        shared = {"low": self.scale[0], "high": self.scale[1], "label_a": self.labels[0], "label_b": self.labels[1],
                  "verdict_prefix": self.verdict_prefix}
        return text.format(**shared, **fields)

    def _question(self, fields: dict[str, str], cot: bool) -> str:
        tail = self.cot_instruction if cot else self.answer_instruction
        return self._fill(self.instruction, fields) + "\n\n" + self._fill(tail, fields)

    def messages(self, fields: dict[str, str], cot: bool = False) -> list[dict[str, str]]:
        """The chat messages asking the question whose `fields` are given (prompt, response / response_a, response_b)."""
        messages = [{"role": "system", "content": self._fill(self.system, fields)}] if self.system else []
        for example in self.examples:
            example_fields = {name: getattr(example, name) for name in RESPONSE_FIELDS[self.kind]}
            lines = [example.reasoning] if cot and example.reasoning else []
            if example.feedback:
                lines.append(f"{self.feedback_prefix} {example.feedback}")
            lines.append(f"{self.verdict_prefix} {example.verdict}")
            messages.append({"role": "user", "content": self._question(example_fields, cot)})
            messages.append({"role": "assistant", "content": "\n".join(lines)})
        messages.append({"role": "user", "content": self._question(fields, cot)})
        return messages

    def with_examples(self, examples: list[dict] | list[JudgeExample]) -> JudgeTemplate:
        """A copy with these in-context examples instead (validated like a file's)."""
        data = self.model_dump()
        data["examples"] = [e.model_dump() if isinstance(e, JudgeExample) else e for e in examples]
        return _validated(data, self.source)


def builtin_templates() -> list[str]:
    """Names of the templates shipped with tandem (`load_template(name)` finds them)."""
    return sorted(path.stem for path in TEMPLATE_DIR.glob("*.yaml"))


def read_yaml_mapping(source: str | Path, builtin_dir: Path, error: type[Exception], *, what: str, builtin: str,
                      expected: str) -> tuple[Path, dict]:
    """(path, mapping) of the YAML file `source`, or of the built-in `builtin_dir/<source>.yaml` when no such file exists.

    Judge templates and constitutions are both read this way. Each failure raises `error` naming the file:
    `what` names the kind of file, `builtin` the built-in ones and `expected` what the mapping holds.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        path = builtin_dir / f"{source}.yaml"
        if not path.is_file():
            names = ", ".join(sorted(name.stem for name in builtin_dir.glob("*.yaml")))
            raise error(f"{what} {str(source)!r}: no such file, and no built-in {builtin} of that name (built-in: {names})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected {expected}, got {type(data).__name__}")
    return path, data


def load_template(template: str | Path | JudgeTemplate, kind: str | None = None) -> JudgeTemplate:
    """A template from a YAML file path, or a built-in template's name; `kind` checks it is a score/compare one."""
    if isinstance(template, JudgeTemplate):
        loaded = template
    else:
        path, data = read_yaml_mapping(template, TEMPLATE_DIR, TemplateError, what="judge template", builtin="template",
                                       expected="a mapping of template fields")
        loaded = _validated(data, str(path))
    if kind is not None and loaded.kind != kind:
        raise TemplateError(f"{loaded.source}: a {kind} judge needs a template of kind '{kind}', this one is '{loaded.kind}'")
    return loaded


def _validated(data: dict, source: str) -> JudgeTemplate:
    try:
        return JudgeTemplate(**{**data, "source": source})
    except ValidationError as error:
        problems = "; ".join(
            f"field '{'.'.join(map(str, e['loc'])) or '(template)'}': {e['msg']}" for e in error.errors()
        )
        raise TemplateError(f"{source}: {problems}") from None
