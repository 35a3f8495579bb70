"""score_safely: failing rewards name the source and sample, or are skipped and reported; WeightedSum with None."""

import math

import pytest
import torch

from tandem.rewards import NamedReward, RewardError, WeightedSum, get_verifier, score_safely

PROMPTS = [f"Question {i}: what is {i} + {i}?" for i in range(4)]
COMPLETIONS = [f"#### {2 * i}" for i in range(4)]


def named(function, name="user_reward"):
    return NamedReward(function, name)


def fails_on_sample_2(prompts, completions, **columns):
    if any("Question 2" in prompt for prompt in prompts):
        raise ZeroDivisionError("bad sample")
    return [1.0] * len(prompts)


def returns_per_sample(bad_value):
    """1.0 everywhere except `bad_value` for the sample whose prompt mentions 2."""
    return lambda prompts, completions, **columns: [bad_value if "Question 2" in p else 1.0 for p in prompts]


@pytest.mark.parametrize(
    "function, kind, detail",
    [
        (fails_on_sample_2, "exception", "raised ZeroDivisionError: bad sample"),
        (returns_per_sample(float("nan")), "nan", "returned NaN"),
        (returns_per_sample(float("inf")), "inf", "returned inf"),
        (returns_per_sample(-math.inf), "inf", "returned -inf"),
        (returns_per_sample("1.0"), "not_a_number", "returned '1.0' (str)"),
    ],
)
def test_raise_names_source_and_offending_sample(function, kind, detail):
    with pytest.raises(RewardError) as caught:
        score_safely(named(function), PROMPTS, COMPLETIONS)
    problem = caught.value.problem
    assert (problem.source, problem.index, problem.kind) == ("user_reward", 2, kind)
    assert problem.prompt == PROMPTS[2] and problem.completion == COMPLETIONS[2]
    message = str(caught.value)
    assert "'user_reward'" in message and "sample 2" in message and PROMPTS[2] in message and detail in message


def test_exception_cause_is_chained():
    with pytest.raises(RewardError) as caught:
        score_safely(named(fails_on_sample_2), PROMPTS, COMPLETIONS)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_wrong_length_is_traced_to_the_sample_that_returns_nothing():
    def drops_sample_2(prompts, completions, **columns):
        return [1.0 for p in prompts if "Question 2" not in p]

    with pytest.raises(RewardError, match="sample 2 .*returned 0 rewards for 1 samples") as caught:
        score_safely(named(drops_sample_2), PROMPTS, COMPLETIONS)
    assert caught.value.problem.kind == "wrong_length"


def test_a_batch_only_failure_is_reported_for_the_batch():
    def scalar(prompts, completions, **columns):
        return 1.0 if len(prompts) > 1 else [1.0]

    with pytest.raises(RewardError, match="the batch as a whole.*returned a float, not a list of 4 rewards"):
        score_safely(named(scalar), PROMPTS, COMPLETIONS)
    scored = score_safely(named(scalar), PROMPTS, COMPLETIONS, on_error="skip")
    assert scored.rewards == [1.0] * 4 and scored.report.n_skipped == 0 and len(scored.report.retried) == 1


def test_long_texts_are_shortened_in_the_error():
    long_prompt = "Question 2 " + "word " * 200
    with pytest.raises(RewardError) as caught:
        score_safely(named(fails_on_sample_2), [long_prompt], ["x" * 500])
    assert len(caught.value.problem.prompt) <= 80 and len(caught.value.problem.completion) <= 80
    assert caught.value.problem.prompt.startswith("Question 2") and " ... " in caught.value.problem.prompt


def test_skip_sets_offenders_to_none_and_reports_them():
    def mixed(prompts, completions, **columns):
        values = {"Question 1": float("nan"), "Question 3": math.inf, "Question 0": None}
        return [next((v for k, v in values.items() if k in p), 0.5) for p in prompts]

    scored = score_safely(named(mixed), PROMPTS, COMPLETIONS, on_error="skip")
    assert scored.rewards == [None, None, 0.5, None]
    report = scored.report
    assert (report.n_samples, report.n_skipped, report.n_not_applicable) == (4, 2, 1)
    assert report.counts == {"nan": 1, "inf": 1}
    assert [(p.index, p.kind) for p in report.problems] == [(1, "nan"), (3, "inf")]
    assert "2 of 4 samples skipped" in report.summary() and PROMPTS[1] in report.summary()
    logged = report.as_dict(max_examples=1)
    assert logged["skipped"] == 2 and len(logged["examples"]) == 1 and logged["examples"][0]["index"] == 1


def test_skip_isolates_an_exception_and_keeps_the_other_samples():
    scored = score_safely(named(fails_on_sample_2), PROMPTS, COMPLETIONS, on_error="skip")
    assert scored.rewards == [1.0, 1.0, None, 1.0]
    assert scored.report.counts == {"exception": 1} and scored.report.retried == ["raised ZeroDivisionError: bad sample"]
    assert not any(isinstance(r, float) and math.isnan(r) for r in scored.rewards)


def test_clean_scores_pass_through_tensors_and_columns():
    def from_tensor(prompts, completions, answer):
        return torch.tensor([float(a) for a in answer])

    scored = score_safely(named(from_tensor), PROMPTS, COMPLETIONS, {"answer": [0, 2, 4, 6]})
    assert scored.rewards == [0.0, 2.0, 4.0, 6.0] and scored.report.clean
    assert scored.by_source == {"user_reward": [0.0, 2.0, 4.0, 6.0]}


def test_bad_arguments_are_caller_errors():
    with pytest.raises(ValueError, match="on_error"):
        score_safely(named(fails_on_sample_2), PROMPTS, COMPLETIONS, on_error="ignore")
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 4 samples"):
        score_safely(named(fails_on_sample_2), PROMPTS, COMPLETIONS, {"answer": [1]})


def test_weighted_sum_skips_none_per_source_and_is_none_when_all_are():
    first = named(lambda p, c, **_: [1.0, None, None, 2.0], "first")
    second = named(lambda p, c, **_: [10.0, 20.0, None, None], "second")
    combined = WeightedSum([(0.5, first), (2.0, second)])
    assert combined(PROMPTS, COMPLETIONS) == [20.5, 40.0, None, 1.0]
    assert combined.name == "0.5*first + 2*second"
    scored = score_safely(combined, PROMPTS, COMPLETIONS)
    assert scored.rewards == [20.5, 40.0, None, 1.0] and scored.report.n_not_applicable == 1
    assert scored.by_source == {"first": [1.0, None, None, 2.0], "second": [10.0, 20.0, None, None]}


def test_weighted_sum_of_verifiers():
    combined = WeightedSum([(0.5, get_verifier("format")), (1.0, get_verifier("numeric"))])
    rewards = combined(["q"] * 3, ["#### 4", "it is 4", "#### 5"], answer=[4, 4, 4])
    assert rewards == [1.5, 1.0, 0.5]


def test_weighted_sum_failure_names_the_term_and_skips_the_whole_sample():
    good = named(lambda p, c, **_: [1.0] * len(p), "good")
    combined = WeightedSum([(1.0, good), (1.0, named(returns_per_sample(float("nan")), "flaky"))])
    with pytest.raises(RewardError, match="reward 'flaky' failed on sample 2"):
        score_safely(combined, PROMPTS, COMPLETIONS)
    scored = score_safely(combined, PROMPTS, COMPLETIONS, on_error="skip")
    assert scored.rewards == [2.0, 2.0, None, 2.0]  # never the partial 1.0 from `good` alone
    assert scored.report.source == combined.name and scored.report.problems[0].source == "flaky"


def test_weighted_sum_rejects_bad_terms():
    with pytest.raises(ValueError, match="at least one"):
        WeightedSum([])
    with pytest.raises(TypeError, match="weights must be numbers"):
        WeightedSum([("0.5", get_verifier("format"))])


def test_a_failing_batch_is_retried_once_per_sample_and_a_single_sample_is_not_retried():
    calls = []

    def counted(prompts, completions, **columns):
        calls.append(len(prompts))
        return fails_on_sample_2(prompts, completions)

    score_safely(named(counted), PROMPTS, COMPLETIONS, on_error="skip")
    assert calls == [4, 1, 1, 1, 1]
    calls.clear()
    scored = score_safely(named(counted), PROMPTS[2:3], COMPLETIONS[2:3], on_error="skip")
    assert calls == [1] and scored.rewards == [None] and scored.report.problems[0].index == 0
