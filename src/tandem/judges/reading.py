"""Reading a verdict: from answer-label probabilities (preferred) or from the judge's text.

With probabilities p(label) over the answer labels (next-token probabilities of a local model, or
`top_logprobs` of a server), the verdict is the probability-weighted label value after renormalising
over the labels:

    value = sum_l p(l) v(l) / sum_l p(l)

which for "A"/"B" is P(A) / (P(A) + P(B)) and for a digit scale the expected score (Lee et al. 2023,
RLAIF, read the preference from the label token probabilities in the same way). Text is parsed only
when no probabilities are available: the first label written after the last `verdict_prefix`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

_OPENERS = "([*\"'`"


def expected_label_value(probabilities: Sequence[float], values: Sequence[float]) -> tuple[float | None, float]:
    """(sum p v / sum p, sum p): the renormalised expected value and the probability mass on the labels.

    The value is None when the labels carry no mass at all (nothing to renormalise).
    """
    if len(probabilities) != len(values):
        raise ValueError(f"{len(probabilities)} probabilities for {len(values)} label values")
    mass = float(sum(probabilities))
    if not mass > 0.0 or not math.isfinite(mass):
        return None, mass
    return sum(p * v for p, v in zip(probabilities, values)) / mass, mass


def normalise_token(token: str) -> str:
    """A token's text as a candidate label: surrounding whitespace and opening brackets/quotes removed."""
    return token.strip().lstrip(_OPENERS).strip()


def find_verdict(text: str, labels: Sequence[str], prefix: str) -> tuple[str, int] | None:
    """(label, character offset) of the verdict in `text`, or None when no label can be read.

    The label must follow the last occurrence of `prefix` (case-insensitive); when the prefix is absent,
    the text must start with the label. Labels may be wrapped in brackets or quotes ("(A)", "**7**") and
    must not run on into a word ("Absolutely" is not "A"); longer labels are tried first ("10" before "1").
    """
    start = 0
    if prefix:
        found = text.lower().rfind(prefix.lower())
        if found >= 0:
            start = found + len(prefix)
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    match = re.compile(rf"\s*[{re.escape(_OPENERS)}]*\s*({alternatives})(?!\w)").match(text, start)
    if match is None:
        return None
    return match.group(1), match.start(1)


def label_probabilities_from_top_logprobs(top: Sequence[tuple[str, float]], labels: Sequence[str]) -> list[float]:
    """Probability of each label among a server's (token, logprob) alternatives; token variants (" A", "A") add up."""
    probabilities = [0.0] * len(labels)
    index = {label: i for i, label in enumerate(labels)}
    for token, logprob in top:
        i = index.get(normalise_token(token))
        if i is not None and logprob is not None and math.isfinite(logprob):
            probabilities[i] += math.exp(logprob)
    return probabilities


def token_at_offset(tokens: Sequence[str], offset: int) -> int | None:
    """Index of the token whose text covers character `offset` of their concatenation (None: past the end)."""
    position = 0
    for index, token in enumerate(tokens):
        if position <= offset < position + len(token):
            return index
        position += len(token)
    return None
