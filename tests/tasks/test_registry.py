"""The task registry: lookup by name, constructor kwargs, and a helpful error for unknown names."""

import pytest

from tandem.tasks import TASKS, ArithmeticTask, SentimentTask, Task, get_task, register_task


def test_builtin_tasks_are_registered_under_their_names():
    assert TASKS["arithmetic"] is ArithmeticTask
    assert TASKS["sentiment"] is SentimentTask
    assert get_task("sentiment").name == "sentiment"
    assert isinstance(get_task("arithmetic"), Task)


def test_get_task_passes_constructor_kwargs():
    assert get_task("sentiment", negative_fraction=0.1).negative_fraction == 0.1
    assert get_task("arithmetic", digits=3, wrong_fraction=0.0).digits == 3


def test_unknown_task_error_lists_known_names():
    with pytest.raises(ValueError) as error:
        get_task("no-such-task")
    message = str(error.value)
    assert "no-such-task" in message
    assert "arithmetic" in message and "sentiment" in message


def test_unknown_constructor_kwarg_is_rejected():
    with pytest.raises(TypeError):
        get_task("sentiment", not_a_field=1)


def test_registering_a_different_class_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="already registered"):

        @register_task("sentiment")
        class Impostor(SentimentTask):
            pass

    assert TASKS["sentiment"] is SentimentTask


def test_every_task_has_a_positive_generation_length():
    for name in TASKS:
        assert get_task(name).max_new_tokens > 0


@pytest.mark.parametrize("name", ["arithmetic", "sentiment"])
def test_held_out_preference_pairs_use_only_held_out_prompts(name):
    task = get_task(name)
    train_prompts = {p["prompt"] for p in task.preference_pairs(3000, seed=1)}
    held_out = task.preference_pairs(300, seed=2, held_out=True)
    eval_prompts = {row["prompt"] for row in task.eval_prompts(2000, seed=0)}
    assert all(p["prompt"] not in train_prompts for p in held_out)
    assert {p["prompt"] for p in held_out} <= eval_prompts
