"""Registries of functions by name: tandem's algorithms are pure functions, registered by name and chosen by name."""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def registrar(table: dict[str, F], kind: str) -> Callable[[str], Callable[[F], F]]:
    """A decorator factory: `@register(name)` adds a function to `table`; each name registers once."""

    def register_as(name: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            table[name] = fn
            return fn

        return register

    return register_as
