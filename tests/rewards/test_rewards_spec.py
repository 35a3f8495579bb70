"""build_reward: parsing what a CLI user writes into reward sources and weighted sums."""

import pytest

from tandem.rewards import (
    FormatCheck,
    NumericAnswer,
    RegexMatch,
    RewardSpecError,
    TaskGold,
    WeightedSum,
    build_reward,
)
from tandem.rewards.spec import parse_option_value, split_specs


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    path = tmp_path / "tandem_test_spec_rewards.py"
    path.write_text("def starts_with_hash(prompts, completions, **columns):\n    return [float(c.startswith('#')) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


def test_single_specs_build_the_named_source():
    assert isinstance(build_reward("verifier:numeric"), NumericAnswer)
    task = build_reward("task:arithmetic")
    assert isinstance(task, TaskGold) and task.name == "task:arithmetic"
    assert task(["Question: What is 2 + 3?\nAnswer:"], [" 2 + 3 = 5\n#### 5"]) == [1.0]


def test_verifier_options_are_parsed_and_typed():
    numeric = build_reward("verifier:numeric:tolerance=0.01:fractions=false:column=label")
    assert (numeric.tolerance, numeric.fractions, numeric.column) == (0.01, False, "label")
    assert [parse_option_value(text) for text in ["3", "0.5", "True", "none", "abc"]] == [3, 0.5, True, None, "abc"]


def test_regex_pattern_keeps_its_colons_and_commas():
    regex = build_reward(r"verifier:regex:full_match=true:pattern=^(?:yes|no): \d{1,3}$")
    assert isinstance(regex, RegexMatch) and regex.full_match
    assert regex.pattern == r"^(?:yes|no): \d{1,3}$"
    assert regex([""] * 2, ["yes: 12", "maybe: 12"]) == [1.0, 0.0]
    pair = build_reward([r"verifier:regex:pattern=a,b:c", "verifier:numeric"])
    assert pair.terms[0][1].pattern == "a,b:c"


def test_python_specs_with_and_without_prefix_and_from_a_file(user_module):
    for spec in ["python:tandem_test_spec_rewards:starts_with_hash", "tandem_test_spec_rewards:starts_with_hash"]:
        source = build_reward(spec)
        assert source([""] * 2, ["#1", "1"]) == [1.0, 0.0]
    assert build_reward("tandem_test_spec_rewards:starts_with_hash").name == "python:tandem_test_spec_rewards:starts_with_hash"
    from_file = build_reward(f"{user_module}:starts_with_hash")
    assert from_file([""], ["#"]) == [1.0]


def test_comma_separated_weighted_specs_make_a_weighted_sum():
    reward = build_reward("0.5*verifier:format, 1.0*verifier:numeric")
    assert isinstance(reward, WeightedSum)
    assert [(weight, type(source)) for weight, source in reward.terms] == [(0.5, FormatCheck), (1.0, NumericAnswer)]
    assert reward([""] * 3, ["#### 4", "it is 4", "#### 5"], answer=[4, 4, 4]) == [1.5, 1.0, 0.5]
    unweighted = build_reward("verifier:format,verifier:numeric")
    assert [weight for weight, _ in unweighted.terms] == [1.0, 1.0]
    assert [weight for weight, _ in build_reward("2*verifier:numeric").terms] == [2.0]
    assert split_specs("1e-1*verifier:format,verifier:numeric") == ["1e-1*verifier:format", "verifier:numeric"]


def test_weights_argument():
    reward = build_reward("verifier:format,verifier:numeric", weights=[0.2, 3])
    assert [weight for weight, _ in reward.terms] == [0.2, 3.0]
    with pytest.raises(RewardSpecError, match="2 weights for 1 reward specs"):
        build_reward("verifier:format", weights=[1, 2])
    with pytest.raises(RewardSpecError, match="both in the spec"):
        build_reward("0.5*verifier:format", weights=[1])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("verifier:nope", "unknown verifier 'nope'"),
        ("verifier:numeric:tolerance", "expected option 'key=value'"),
        ("task:chess", "unknown task 'chess'"),
        ("numeric", "must be verifier:NAME"),
        ("verifier:format,,verifier:numeric", "empty reward spec"),
        ("python:no_such_reward_module_xyz:f", "cannot import module"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(RewardSpecError, match=message):
        build_reward(spec)


def test_model_spec_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_reward(f"model:{tmp_path}")
    with pytest.raises(RewardSpecError, match="unknown option"):
        build_reward(f"model:{tmp_path}:batchsize=4")
