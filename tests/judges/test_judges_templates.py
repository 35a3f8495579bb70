"""Prompt templates: built-ins load, in-context examples render, bad files are named with their field."""

import pytest

from tandem.judges import JudgeTemplate, TemplateError, builtin_templates, load_template


def test_builtin_templates_load_with_their_labels():
    assert {"score", "compare", "score_oneshot_feedback"} <= set(builtin_templates())
    score, compare = load_template("score", "score"), load_template("compare", "compare")
    assert score.answer_labels == [str(k) for k in range(10)] and score.label_values[0] == 0 and score.label_values[-1] == 1
    assert compare.answer_labels == ["A", "B"] and compare.label_values == [1.0, 0.0]
    with pytest.raises(TemplateError, match="kind 'score'"):
        load_template("compare", "score")


def test_messages_put_the_question_last_and_chain_of_thought_changes_the_ask():
    template = load_template("compare")
    plain = template.messages({"prompt": "P?", "response_a": "first", "response_b": "second"})
    thinking = template.messages({"prompt": "P?", "response_a": "first", "response_b": "second"}, cot=True)
    assert [m["role"] for m in plain] == ["system", "user"]
    assert "Response A: first" in plain[-1]["content"] and "Response B: second" in plain[-1]["content"]
    assert plain[-1]["content"] != thinking[-1]["content"] and "explain" not in plain[-1]["content"]


def test_a_single_example_of_verbal_feedback_is_shown_before_the_question():
    template = load_template("score_oneshot_feedback")
    messages = template.messages({"prompt": "Review: It", "response": " was lovely."})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "Feedback: Too negative: the review should praise the film.\nVerdict: 1"
    replaced = template.with_examples([{"prompt": "x", "response": "y", "feedback": "too long", "verdict": 3}])
    assert replaced.messages({"prompt": "p", "response": "r"})[2]["content"] == "Feedback: too long\nVerdict: 3"
    assert replaced.fingerprint != template.fingerprint


def test_bad_template_files_name_the_file_and_the_field(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("kind: compare\ninstruction: 'Which is better? {prompt} {response_a}'\n")
    with pytest.raises(TemplateError, match=r"mine\.yaml.*response_b"):
        load_template(path)
    path.write_text("kind: score\ninstruction: '{prompt} {response} {colour}'\n")
    with pytest.raises(TemplateError, match="colour"):
        load_template(path)
    path.write_text("kind: score\ninstruction: '{prompt} {response}'\nexamples:\n  - {prompt: p, response: r, verdict: 12}\n")
    with pytest.raises(TemplateError, match="examples"):
        load_template(path)
    path.write_text("kind: score\ninstruction: '{prompt} {response}'\nscale: [1, 10]\nlabels_typo: 3\n")
    with pytest.raises(TemplateError, match="labels_typo"):
        load_template(path)
    with pytest.raises(TemplateError, match="no such file"):
        load_template(tmp_path / "missing.yaml")


def test_a_custom_template_file_is_used(tmp_path):
    path = tmp_path / "polite.yaml"
    path.write_text("kind: score\ninstruction: 'Is it polite? {prompt} -> {response}'\nscale: [1, 5]\n")
    template = load_template(path)
    assert isinstance(template, JudgeTemplate) and template.answer_labels == ["1", "2", "3", "4", "5"]
    assert template.label_values == [0.0, 0.25, 0.5, 0.75, 1.0]
