"""Registries of functions by name: tandem's algorithms are pure functions, registered by name and chosen by name.

An entry may carry facts the trainers read instead of testing names: what it needs (critic values, a
reference model), what it reads (`score_only`), and the keyword options it takes from a config
(`options`). Facts are declared with their defaults when the registry is made; an entry states only
those that differ. The bottom layer: it imports nothing from tandem.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable)


def registrar(
    table: dict[str, F], kind: str, facts: dict[str, dict[str, Any]] | None = None, **defaults: Any
) -> Callable[..., Callable[[F], F]]:
    """A decorator factory: `@register(name, **facts)` adds a function (or class) to `table`.

    Each name registers once; the same qualified name again (its module imported a second time)
    replaces the entry. With `facts`, the entry's facts (`defaults` updated with the ones given) go to
    `facts[name]`; a fact that was not declared is an error.
    """

    def register_as(name: str, **given: Any) -> Callable[[F], F]:
        unknown = set(given) - set(defaults)
        if unknown:
            raise TypeError(f"{kind} {name!r}: unknown facts {sorted(unknown)}; declared: {sorted(defaults)}")

        def register(fn: F) -> F:
            existing = table.get(name)
            if existing is not None and existing.__qualname__ != fn.__qualname__:
                raise ValueError(f"{kind} {name!r} is already registered by {existing.__qualname__}")
            table[name] = fn
            if facts is not None:
                facts[name] = {**defaults, **given}
            return fn

        return register

    return register_as


def lookup(table: Mapping[str, F], name: str, kind: str) -> F:
    """`table[name]`, or a ValueError that lists the registered names."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


class FactView(Mapping):
    """One fact of every entry, read-only by name: `FactView(facts, "needs_values")["gae"]`."""

    def __init__(self, facts: dict[str, dict[str, Any]], fact: str):
        self._facts, self._fact = facts, fact

    def __getitem__(self, name: str) -> Any:
        return self._facts[name][self._fact]

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts)

    def __len__(self) -> int:
        return len(self._facts)
