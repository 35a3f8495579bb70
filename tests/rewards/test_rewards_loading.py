"""Importing a user's reward function from `module:function` or `path/to/file.py:function`."""

import textwrap

import pytest

from tandem.rewards import NamedReward, RewardSpecError, as_reward_source, load_reward_function, reward_name

USER_MODULE = textwrap.dedent(
    """
    def length_reward(prompts, completions, **columns):
        return [float(len(c)) for c in completions]

    class Scorer:
        @staticmethod
        def score(prompts, completions, **columns):
            return [1.0 for _ in completions]

    THRESHOLD = 3
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "tandem_test_user_rewards.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "tandem_test_user_rewards.py"


def test_loads_a_function_from_an_importable_module(user_module):
    function = load_reward_function("tandem_test_user_rewards:length_reward")
    assert function(["p", "p"], ["ab", "abcd"]) == [2.0, 4.0]
    nested = load_reward_function("tandem_test_user_rewards:Scorer.score")
    assert nested(["p"], ["x"]) == [1.0]


def test_loads_a_function_from_a_file_path(tmp_path):
    path = tmp_path / "my_file_rewards.py"
    path.write_text(USER_MODULE)
    function = load_reward_function(f"{path}:length_reward")
    assert function(["p"], ["abc"]) == [3.0]


def test_missing_module_attribute_or_file_and_not_callable_are_clear(user_module, tmp_path):
    with pytest.raises(RewardSpecError, match="cannot import module 'no_such_reward_module'"):
        load_reward_function("no_such_reward_module:f")
    with pytest.raises(RewardSpecError, match="has no attribute 'lenght_reward'.*length_reward"):
        load_reward_function("tandem_test_user_rewards:lenght_reward")
    with pytest.raises(RewardSpecError, match="is a int, not a callable"):
        load_reward_function("tandem_test_user_rewards:THRESHOLD")
    with pytest.raises(RewardSpecError, match="no such file"):
        load_reward_function(f"{tmp_path}/absent.py:f")
    with pytest.raises(RewardSpecError, match="must look like 'module:function'"):
        load_reward_function("tandem_test_user_rewards")


def test_a_missing_dependency_of_the_user_module_is_not_disguised(tmp_path, monkeypatch):
    (tmp_path / "tandem_test_broken_rewards.py").write_text("import definitely_not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="definitely_not_installed_pkg"):
        load_reward_function("tandem_test_broken_rewards:f")


def test_plain_callables_get_a_name_and_named_sources_keep_theirs(user_module):
    function = load_reward_function("tandem_test_user_rewards:length_reward")
    source = as_reward_source(function)
    assert isinstance(source, NamedReward) and source.name == "length_reward"
    assert source(["p"], ["ab"]) == [2.0]
    assert as_reward_source(source) is source
    assert as_reward_source(function, name="python:x").name == "python:x"
    assert reward_name(lambda p, c: []) == "test_plain_callables_get_a_name_and_named_sources_keep_theirs.<locals>.<lambda>"
    with pytest.raises(TypeError, match="callable"):
        as_reward_source(3)
