"""Constitutions (Bai et al. 2022b): YAML files of principles, each with a critique and a revision request.

    constitution = load_constitution("polite")            # a built-in one (constitutions/*.yaml), or a path
    principle = constitution.principles[0]
    principle.critique_request, principle.revision_request, principle.comparison

A file looks like::

    name: my-rules
    principles:
      - id: no-rudeness
        critique_request: Identify anything rude in the reply.
        revision_request: Rewrite the reply without anything rude.
        comparison: Which reply is more polite?          # optional: the RL-CAI labelling question
        keywords: [stupid, idiot]                        # optional: words that break the principle

Files are read with `yaml.safe_load` and validated; `ConstitutionError` names the file and the field.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tandem.judges.templates import read_yaml_mapping

CONSTITUTION_DIR = Path(__file__).parent / "constitutions"
_WORD = re.compile(r"[a-z0-9]+")


class ConstitutionError(ValueError):
    """A constitution file is missing, not YAML, or has a bad field (the message names the file and field)."""


class Principle(BaseModel):
    """One rule: how to critique a response against it, how to revise it, and how to compare two responses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="A short unique name, used in logs and reports.")
    critique_request: str = Field(min_length=1, description="Asked after a response: what is wrong with it under this rule?")
    revision_request: str = Field(min_length=1, description="Asked after the critique: rewrite the response to follow the rule.")
    comparison: str | None = Field(None, description="RL-CAI labelling question; default: built from the critique request.")
    keywords: tuple[str, ...] = Field((), description="Words whose presence breaks the rule (for the rule-based critic).")

    @field_validator("keywords")
    @classmethod
    def _lower_words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [word for word in value if not _WORD.fullmatch(word.lower())]
        if bad:
            raise ValueError(f"keywords must be single words of letters and digits, got {bad}")
        return tuple(word.lower() for word in value)

    @property
    def question(self) -> str:
        """The comparison question RL-CAI asks a judge about two responses."""
        return self.comparison or f"Which response is better under this rule: {self.critique_request}"

    def broken_by(self, response: str) -> list[str]:
        """The principle's keywords found in `response` (empty: not broken, as far as keywords tell)."""
        words = set(_WORD.findall(response.lower()))
        return [word for word in self.keywords if word in words]


class Constitution(BaseModel):
    """A named list of principles with unique ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    principles: tuple[Principle, ...] = Field(min_length=1)
    source: str = Field("<memory>", exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> Constitution:
        ids = [p.id for p in self.principles]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"principle ids must be unique, repeated: {duplicates}")
        return self

    def principle(self, principle_id: str) -> Principle:
        for principle in self.principles:
            if principle.id == principle_id:
                return principle
        raise KeyError(f"constitution {self.name!r} has no principle {principle_id!r}; it has {[p.id for p in self.principles]}")


def builtin_constitutions() -> list[str]:
    """Names of the constitutions shipped with tandem."""
    return sorted(path.stem for path in CONSTITUTION_DIR.glob("*.yaml"))


def load_constitution(source: str | Path | Constitution) -> Constitution:
    """A constitution from a YAML path or a built-in name; raises `ConstitutionError` naming the file and field."""
    if isinstance(source, Constitution):
        return source
    path, data = read_yaml_mapping(source, CONSTITUTION_DIR, ConstitutionError, what="constitution",
                                   builtin="constitution", expected="a mapping with 'name' and 'principles'")
    try:
        return Constitution(**{**data, "source": str(path)})
    except ValidationError as error:
        problems = "; ".join(f"field '{_location(e['loc'], data)}': {e['msg']}" for e in error.errors())
        raise ConstitutionError(f"{path}: {problems}") from None
    except TypeError as error:
        raise ConstitutionError(f"{path}: {error}") from None


def _location(loc: tuple, data: dict) -> str:
    """'principles[2].revision_request' (1-based, and the principle's id when it has one)."""
    parts: list[str] = []
    for i, piece in enumerate(loc):
        if isinstance(piece, int) and parts:
            label = f"[{piece + 1}]"
            principles = data.get("principles")
            if loc[:i] == ("principles",) and isinstance(principles, list) and isinstance(principles[piece], dict):
                label += f" (id {principles[piece].get('id')!r})" if principles[piece].get("id") else ""
            parts[-1] += label
        else:
            parts.append(str(piece))
    return ".".join(parts) or "(constitution)"
