"""Constitution files: the built-in one loads, bad files fail with the file and the field named."""

import pytest

from tandem.ai_feedback.constitution import (
    Constitution, ConstitutionError, Principle, builtin_constitutions, load_constitution,
)


def test_builtin_polite_constitution_loads_with_its_principles():
    assert "polite" in builtin_constitutions()
    constitution = load_constitution("polite")
    assert [p.id for p in constitution.principles] == ["no-rudeness", "no-forbidden-topics", "helpful"]
    rude = constitution.principle("no-rudeness")
    assert "rude" in rude.critique_request and "Rewrite" in rude.revision_request
    assert rude.broken_by(" Ugh. It is in aisle 3, you IDIOT.") == ["idiot", "ugh"]
    assert rude.broken_by(" It is in aisle 3.") == []
    assert constitution.principle("helpful").keywords == ()
    with pytest.raises(KeyError, match="no principle 'kindness'"):
        constitution.principle("kindness")


def test_question_defaults_to_the_critique_request():
    principle = Principle(id="x", critique_request="Is it kind?", revision_request="Make it kind.")
    assert principle.question.endswith("Is it kind?")
    assert Principle(id="x", critique_request="a", revision_request="b", comparison="Which is kinder?").question == "Which is kinder?"


def write(tmp_path, text):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_missing_field_names_the_file_and_the_principle(tmp_path):
    path = write(tmp_path, "name: r\nprinciples:\n  - id: a\n    critique_request: c\n    revision_request: r\n"
                           "  - id: b\n    critique_request: c\n")
    with pytest.raises(ConstitutionError) as error:
        load_constitution(path)
    message = str(error.value)
    assert str(path) in message and "principles[2] (id 'b').revision_request" in message and "required" in message.lower()


@pytest.mark.parametrize("text, expected", [
    ("name: r\nprinciples: []\n", "field 'principles'"),
    ("name: r\nprinciples:\n  - {id: a, critique_request: c, revision_request: r}\n"
     "  - {id: a, critique_request: c, revision_request: r}\n", "repeated: ['a']"),
    ("name: r\nprinciples:\n  - {id: a, critique_request: c, revision_request: r, keywords: ['two words']}\n", "keywords"),
    ("name: r\nprinciples:\n  - {id: a, critique_request: c, revision_request: r, colour: red}\n", "colour"),
    ("- just\n- a list\n", "expected a mapping"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_files_are_refused_with_a_clear_message(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConstitutionError, match="rules.yaml") as error:
        load_constitution(path)
    assert expected in str(error.value)


def test_unknown_name_lists_the_builtin_ones():
    with pytest.raises(ConstitutionError, match="built-in: .*polite"):
        load_constitution("no-such-constitution")
    constitution = load_constitution("polite")
    assert load_constitution(constitution) is constitution and isinstance(constitution, Constitution)
