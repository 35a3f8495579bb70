"""`tandem.registry`: entries by name, with the facts the trainers read."""

import pytest

from tandem.registry import FactView, lookup, registrar


def test_entries_carry_their_facts_with_the_declared_defaults():
    table, facts = {}, {}
    register = registrar(table, "widget", facts, needs_values=False, options=())

    @register("plain")
    def plain():
        return 1

    @register("valued", needs_values=True, options=("gamma",))
    def valued():
        return 2

    assert table == {"plain": plain, "valued": valued}
    assert facts == {"plain": {"needs_values": False, "options": ()},
                     "valued": {"needs_values": True, "options": ("gamma",)}}
    assert dict(FactView(facts, "needs_values")) == {"plain": False, "valued": True}
    with pytest.raises(TypeError, match="unknown facts"):
        register("typo", needs_value=True)
    with pytest.raises(ValueError, match="already registered"):
        register("plain")(lambda: 3)
    assert lookup(table, "valued", "widget") is valued
    with pytest.raises(ValueError, match="unknown widget 'nope'; known: plain, valued"):
        lookup(table, "nope", "widget")
