"""Option strings on the command line: `name:key=value:key=value`, as tasks, rewards and judges spell them.

The one parser every layer uses (tasks, rewards and judges sit above it and import nothing from each
other to read their options).
"""

from __future__ import annotations

from typing import Any


class SpecError(ValueError):
    """An option string that does not parse."""


def parse_option_value(text: str) -> Any:
    """`true`/`false` -> bool, `none` -> None, then int, then float; anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_options(text: str, spec: str, error: type[ValueError] = SpecError) -> dict[str, Any]:
    """`k=v:k=v` into a dict; `pattern=` swallows the rest (regular expressions contain colons).

    `spec` names the whole string (e.g. "reward spec 'verifier:numeric:x'") in the `error` raised for a
    piece that is not `key=value`.
    """
    options: dict[str, Any] = {}
    while text:
        if text.startswith("pattern="):
            options["pattern"] = text[len("pattern=") :]
            break
        piece, _, text = text.partition(":")
        key, equals, value = piece.partition("=")
        if not equals or not key:
            raise error(f"{spec}: expected option 'key=value', got {piece!r}")
        options[key.strip()] = parse_option_value(value.strip())
    return options
