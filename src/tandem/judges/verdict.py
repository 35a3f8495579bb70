"""A judge's verdict: a value in [0, 1] or the reason there is none, with what the judge said."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """One judgement: `value` in [0, 1] (None when unusable), why it is unusable, and what the judge said.

    `reason` is None for a usable verdict, else one of: "timeout", "connection_error", "server_error",
    "rate_limited", "client_error", "bad_response" (a reply that is not a chat completion), "unparsable"
    (no label in the text), "no_label_mass", "too_long", "exception", "invalid_value". Under the
    "neutral" policy an unusable verdict has value 0.5 and keeps its reason.
    `method` says how the value was read: "token_probs", "logprobs", "text", "function" or "both_orders".
    """

    value: float | None
    reason: str | None = None
    raw: str = ""
    method: str = ""
    detail: str = ""
    cached: bool = False
    parts: tuple[Verdict, ...] = ()

    @property
    def usable(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parts"] = [part.as_dict() for part in self.parts]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        parts = tuple(cls.from_dict(part) for part in data.get("parts", ()))
        return cls(**{**data, "parts": parts})


def unusable(reason: str, raw: str = "", detail: str = "", method: str = "") -> Verdict:
    return Verdict(None, reason=reason, raw=raw, detail=detail, method=method)
