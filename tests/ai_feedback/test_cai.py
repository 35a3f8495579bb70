"""SL-CAI critique-revision loop and RL-CAI labels from principles, with rule-based and model critics."""

import pytest

import tandem.tasks.polite  # noqa: F401
from tandem.ai_feedback.cai import (
    KeywordReviser, ModelReviser, build_reviser, constitutional_preferences, critique_revise, keyword_judge,
    principle_judges, principle_template,
)
from tandem.ai_feedback.constitution import load_constitution
from tandem.tasks import get_task

PROMPT = "Customer: Where can I find the blue lamp?\nAssistant:"
RUDE = " Ugh. The blue lamp is in aisle 4. Stop bothering me."
OFF_TOPIC = " Sure! Politics in this town is a mess. The blue lamp is in aisle 4."
POLITE = " Sure! The blue lamp is in aisle 4. Have a nice day."


@pytest.fixture(scope="module")
def constitution():
    return load_constitution("polite")


def test_keyword_reviser_critiques_and_deletes_the_offending_sentences(constitution):
    rude, topics, helpful = constitution.principles
    reviser = KeywordReviser()
    critiques = reviser.critique([PROMPT] * 3, [RUDE, RUDE, POLITE], [rude, topics, rude])
    assert critiques[0] == "The reply breaks 'no-rudeness': it says 'ugh', 'bothering'."
    assert critiques[1].startswith("No problem") and critiques[2].startswith("No problem")
    revised = reviser.revise([PROMPT] * 3, [RUDE, OFF_TOPIC, " Ugh. Stupid."], [rude, topics, rude], critiques)
    assert revised[0] == " The blue lamp is in aisle 4."
    assert revised[1] == " Sure! The blue lamp is in aisle 4."
    assert revised[2] == " Ugh. Stupid."  # nothing would remain: left as it is


def test_critique_revise_runs_rounds_with_seeded_principles(constitution):
    task = get_task("polite")
    prompts, responses = [PROMPT] * 40, [" Ugh. Politics in this town is a mess. The blue lamp is in aisle 4."] * 40
    records = critique_revise(prompts, responses, constitution, KeywordReviser(), rounds=3, seed=1)
    assert records == critique_revise(prompts, responses, constitution, KeywordReviser(), rounds=3, seed=1)
    assert all(len(r["steps"]) == 3 and r["initial"] == responses[0] for r in records)
    assert all(r["steps"][-1]["revision"] == r["final"] for r in records)
    used = {step["principle"] for r in records for step in r["steps"]}
    assert used == {"no-rudeness", "no-forbidden-topics", "helpful"}
    # a response revised under both rule principles ends without violations; the answer survives every round
    both = [r for r in records if {"no-rudeness", "no-forbidden-topics"} <= {s["principle"] for s in r["steps"]}]
    assert both and not any(task.violations([PROMPT], [r["final"]])[0] for r in both)
    assert all("aisle 4" in r["final"] for r in records)
    with pytest.raises(ValueError, match="rounds"):
        critique_revise(prompts, responses, constitution, KeywordReviser(), rounds=0)


def test_model_reviser_loop_runs_with_a_local_model(constitution, tiny_model_dir):
    reviser = ModelReviser(tiny_model_dir, max_new_tokens=8)
    assert reviser.name.startswith("local:")
    records = critique_revise([PROMPT] * 3, [RUDE] * 3, constitution, reviser, rounds=2, seed=0)
    assert len(records) == 3 and all(isinstance(r["final"], str) and r["final"] for r in records)
    assert all(isinstance(step["critique"], str) for r in records for step in r["steps"])
    text = ModelReviser.critique_text(PROMPT, RUDE, constitution.principles[0])
    assert text.endswith("Critique request: " + constitution.principles[0].critique_request + "\nCritique:")


def test_build_reviser_names_the_choices(tiny_model_dir):
    assert isinstance(build_reviser("keywords"), KeywordReviser)
    assert isinstance(build_reviser(f"local:{tiny_model_dir}"), ModelReviser)
    with pytest.raises(ValueError, match="keywords, policy or local:PATH"):
        build_reviser("gpt")
    with pytest.raises(ValueError, match="needs the policy"):
        build_reviser("policy")


def test_keyword_judges_prefer_the_response_that_keeps_the_rule(constitution):
    rude, topics, helpful = constitution.principles
    assert keyword_judge(rude).compare([PROMPT], [POLITE], [RUDE])[0].value == 1.0
    assert keyword_judge(topics).compare([PROMPT], [POLITE], [RUDE])[0].value == 0.5
    assert keyword_judge(helpful).compare([PROMPT], [POLITE], [RUDE])[0].value == 0.5


def test_constitutional_preferences_ensemble_over_principles(constitution):
    judges = principle_judges(constitution, "keywords")
    prompts = [PROMPT] * 3
    everything = constitutional_preferences(judges, prompts, [POLITE, RUDE, OFF_TOPIC], [RUDE, OFF_TOPIC, POLITE])
    # all three principles: rude vs polite -> (1 + 0.5 + 0.5) / 3
    assert everything == [pytest.approx(2 / 3), pytest.approx(0.5), pytest.approx(1 / 3)]
    one = constitutional_preferences(judges, prompts * 20, [POLITE] * 60, [RUDE] * 60, principles_per_label=1, seed=3)
    assert set(one) == {1.0, 0.5} and one == constitutional_preferences(
        judges, prompts * 20, [POLITE] * 60, [RUDE] * 60, principles_per_label=1, seed=3)


def test_local_principle_judges_read_a_b_probabilities_in_both_orders(constitution, tiny_model_dir):
    template = principle_template(constitution.principles[0])
    assert template.kind == "compare" and constitution.principles[0].comparison in template.instruction
    judges = principle_judges(constitution, f"local:{tiny_model_dir}")
    assert set(judges) == {"no-rudeness", "no-forbidden-topics", "helpful"}
    values = constitutional_preferences(judges, [PROMPT] * 2, [POLITE, RUDE], [RUDE, POLITE])
    assert all(v is not None and 0.0 <= v <= 1.0 for v in values)
    judge = judges["no-rudeness"]
    assert judge.stats.pairs_both_orders == 2 and judge.stats.questions + judge.stats.cache_hits == 4
    # both orders averaged: swapping a and b gives 1 - p
    assert values[0] == pytest.approx(1.0 - values[1], abs=1e-6)
