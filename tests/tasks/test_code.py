"""The code task: deterministic problems with hidden asserts, a held-out split, and a gold reward run in the sandbox."""

import itertools

import pytest

from tandem.tasks import TASKS, CodeTask, get_task
from tandem.tasks.code import TEMPLATES, Problem, last_python_block, problem_from_prompt

ALL_PROBLEMS = [Problem(template, values) for template in TEMPLATES
                for values in itertools.product(*template.constants.values())]


def test_it_is_registered_and_its_data_is_the_same_for_a_seed():
    assert TASKS["code"] is CodeTask and get_task("code:seconds=1").seconds == 1
    task = get_task("code")
    assert task.sft_examples(20, seed=3) == task.sft_examples(20, seed=3) != task.sft_examples(20, seed=4)
    assert task.eval_prompts(10, seed=0) == get_task("code").eval_prompts(10, seed=0)
    assert len(task.pretrain_corpus(5)) == 5


def test_held_out_problems_never_appear_in_training_data():
    task = get_task("code")
    train = {row["prompt"] for row in task.sft_examples(3000)}
    held_out = task.eval_prompts(60)
    assert len({row["prompt"] for row in held_out}) == 60
    assert not train & {row["prompt"] for row in held_out}
    assert all(row["tests"].count("assert ") == 6 for row in held_out)


def test_every_reference_solution_passes_its_tests_and_the_tests_are_stable():
    """Run here, in-process: these are the task's own solutions, not a model's."""
    for problem in ALL_PROBLEMS:
        namespace = {}
        exec(last_python_block(problem.completion()) + "\n" + problem.tests(), namespace)
        assert problem.tests() == problem.tests()


def test_the_problem_is_found_from_the_prompt_alone_even_inside_a_chat_template():
    for problem in ALL_PROBLEMS:
        wrapped = f"<|im_start|>user\n{problem.prompt()}<|im_end|>\n<|im_start|>assistant\n"
        assert problem_from_prompt(wrapped).key == problem.key
    with pytest.raises(ValueError, match="tests"):
        problem_from_prompt("Question: What is 2 + 2?\nAnswer:")


def test_the_gold_reward_runs_the_completions_against_the_hidden_tests():
    task = get_task("code", seconds=2.0)
    problems = [next(p for p in ALL_PROBLEMS if p.template is template) for template in TEMPLATES]
    prompts = [problem.prompt() for problem in problems]
    right = [problem.completion() for problem in problems]
    wrong = [task._wrong_completion(problem, __import__("random").Random(0)) for problem in problems[:3]]
    assert task.gold_reward(prompts, right) == [1.0] * len(TEMPLATES)
    columns = {"tests": [problem.tests() for problem in problems[:3]]}
    assert task.gold_reward(prompts[:3], wrong, **columns) == [0.0, 0.0, 0.0]
    assert task.gold_reward(prompts[:2], ["no code here", right[0]]) == [0.0, 0.0]  # right[0] is problem 0's
    assert task.scorer.counts["no_code"] == 1


def test_preference_pairs_prefer_the_solution_that_passes():
    pairs = get_task("code").preference_pairs(3, seed=0)
    for pair in pairs:
        assert pair["chosen"] == problem_from_prompt(pair["prompt"]).completion()


def test_the_generation_length_has_room_for_every_reference_solution():
    assert get_task("code").max_new_tokens >= max(len(problem.completion()) for problem in ALL_PROBLEMS)


def test_grpo_prompts_of_the_code_task_carry_the_tests_verifier_code_runs(tmp_path):
    """`tandem grpo --task code --reward verifier:code`: the task's prompt rows keep their `tests` column."""
    from tandem.rewards import get_verifier
    from tandem.trainers.grpo import GRPOConfig
    from tandem.trainers.online import load_prompts

    task = get_task("code")
    config = GRPOConfig(task="code", reward="verifier:code", n_prompts=4, out=tmp_path)
    rows = load_prompts(config, None, task)
    assert len(rows) == 4 and all(set(row) == {"prompt", "tests"} for row in rows)
    right = [problem_from_prompt(row["prompt"]).completion() for row in rows]
    verifier = get_verifier("code")
    prompts, tests = [row["prompt"] for row in rows], [row["tests"] for row in rows]
    assert verifier(prompts, right, tests=tests) == [1.0] * 4
    assert verifier(prompts, ["```python\nraise SystemExit\n```"] * 4, tests=tests) == [0.0] * 4
