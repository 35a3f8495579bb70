"""Pull the final numeric answer out of a completion: `#### N` (GSM8K), then `\\boxed{...}`, then the last number.

Numbers may carry thousands separators (`1,234`), a sign (`-7`, but the `-` in `10-3` is a minus, not a sign),
decimals (`2.5`, `.5`) and, optionally, a fraction (`3/4`, and `\\frac{3}{4}` inside `\\boxed{}`).
"""

from __future__ import annotations

import re

# A magnitude: `1,234` (groups of exactly three), `1234`, `2.5`, `.5`; then an optional `/denominator`.
_NUMBER = re.compile(
    r"(?<![\d.])(?P<magnitude>(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*(?P<denominator>(?:\d+)(?:\.\d+)?))?"
)
_LATEX_FRACTION = re.compile(r"\\d?frac\s*\{\s*([^{}]*?)\s*\}\s*\{\s*([^{}]*?)\s*\}")
_MINUS_SIGNS = "-\u2212"  # ASCII hyphen-minus and the Unicode minus sign


def parse_numbers(text: str, fractions: bool = True) -> list[float | None]:
    """Every number in `text`, in order (None for a fraction with a zero denominator)."""
    values: list[float | None] = []
    for match in _NUMBER.finditer(text):
        value = float(match.group("magnitude").replace(",", ""))
        if _is_negative(text, match.start()):
            value = -value
        denominator = match.group("denominator")
        if denominator is not None:
            if fractions:
                values.append(value / float(denominator) if float(denominator) != 0 else None)
                continue
            values.append(value)  # "3/4" without fractions reads as two numbers, 3 and 4
            value = float(denominator)
        values.append(value)
    return values


def _is_negative(text: str, start: int) -> bool:
    """A `-` right before the digits is a sign unless it follows a word or number (`10-3`, `x-1`)."""
    if start == 0 or text[start - 1] not in _MINUS_SIGNS:
        return False
    before = text[start - 2] if start >= 2 else " "
    return not (before.isalnum() or before in "._)]}")


def last_number(text: str, fractions: bool = True) -> float | None:
    numbers = parse_numbers(text, fractions)
    return numbers[-1] if numbers else None


def after_hashes(text: str, fractions: bool = True) -> float | None:
    """The first number on the line after the last `####` (GSM8K's final-answer marker), else None."""
    marker = text.rfind("####")
    if marker < 0:
        return None
    line = text[marker + 4 :].split("\n", 1)[0]
    numbers = parse_numbers(line, fractions)
    return numbers[0] if numbers else None


def boxed_content(text: str) -> str | None:
    """What the last `\\boxed{...}` (or `\\fbox{...}`) holds, with nested braces, else None."""
    starts = [match.end() for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for position in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[start:position]
    return None  # unclosed: not a finished answer


def in_boxed(text: str, fractions: bool = True) -> float | None:
    """The number in the last `\\boxed{}`; `\\frac{a}{b}` counts when `fractions` is on; else its last number."""
    content = boxed_content(text)
    if content is None:
        return None
    if fractions:
        content = _LATEX_FRACTION.sub(lambda m: f"{m.group(1)}/{m.group(2)}", content)
    return last_number(content, fractions)


def extract_answer(text: str, fractions: bool = True) -> float | None:
    """The final answer of `text`: after `####`, else in `\\boxed{}`, else the last number; None if there is none."""
    for extractor in (after_hashes, in_boxed, last_number):
        value = extractor(text, fractions)
        if value is not None:
            return value
    return None
