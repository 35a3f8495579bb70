"""reasoning-gym datasets as tasks (`rg:DATASET:k=v`): splits, the dataset's own scorer, option pass-through."""

import pytest

pytest.importorskip("reasoning_gym")

import reasoning_gym  # noqa: E402

from tandem.rewards import build_reward  # noqa: E402
from tandem.tasks import ReasoningGymTask, get_task  # noqa: E402
from tandem.tasks.reasoning_gym import extract_completion_answer  # noqa: E402


def test_rg_spec_names_the_dataset_and_passes_options_through():
    task = get_task("rg:leg_counting:size=40:seed=3:max_animals=4:eval_size=20")
    assert isinstance(task, ReasoningGymTask) and task.dataset == "leg_counting"
    assert (task.size, task.seed, task.eval_size, task.options) == (40, 3, 20, {"max_animals": 4})
    # The training questions are exactly reasoning-gym's own for these options.
    expected = reasoning_gym.create_dataset("leg_counting", size=40, seed=3, max_animals=4)
    assert [e["question"] for e in task.train_entries] == [e["question"] for e in expected]
    assert all(len(e["metadata"]["animals"]) <= 4 for e in task.train_entries)


@pytest.mark.parametrize("dataset", ["basic_arithmetic", "chain_sum", "leg_counting"])
def test_train_and_eval_prompts_are_disjoint_and_deterministic(dataset):
    task = get_task(f"rg:{dataset}:size=300:eval_size=100")
    train = {row["prompt"] for row in task.sft_examples(300, seed=0)}
    held_out = task.eval_prompts(60, seed=0)
    assert not train & {row["prompt"] for row in held_out}
    assert len({row["prompt"] for row in held_out}) == 60
    again = get_task(f"rg:{dataset}:size=300:eval_size=100")
    assert again.eval_prompts(60, seed=0) == held_out and again.sft_examples(20, seed=1) == task.sft_examples(20, seed=1)
    assert task.sft_examples(20, seed=1) != task.sft_examples(20, seed=2)  # the method's seed orders the draw
    assert get_task(f"rg:{dataset}:size=300:seed=1").train_entries != task.train_entries


@pytest.mark.parametrize("dataset", ["basic_arithmetic", "leg_counting"])
def test_gold_reward_is_reasoning_gyms_scorer_one_for_right_zero_for_wrong(dataset):
    task = get_task(f"rg:{dataset}:size=50:eval_size=20")
    entries = task.train_entries[:10] + task.eval_entries[:10]
    prompts = [task.format_prompt(entry["question"]) for entry in entries]
    assert all("<answer>" in prompt and "</answer>" in prompt for prompt in prompts)  # the prompt says the format
    right = [f"Let me think.\n<answer>{entry['answer']}</answer>" for entry in entries]
    wrong = [f"<answer>{'x' if entry['answer'] != 'x' else 'y'}</answer>" for entry in entries]
    assert task.gold_reward(prompts, right) == [1.0] * len(entries)
    assert task.gold_reward(prompts, wrong) == [0.0] * len(entries)
    assert task.gold_reward(prompts, ["I do not know."] * len(entries)) == [0.0] * len(entries)
    demonstrations = task.sft_examples(20, seed=0)  # the gold answer, in the format the prompt asks for
    assert task.gold_reward([ex["prompt"] for ex in demonstrations], [ex["completion"] for ex in demonstrations]) == [1.0] * 20


def test_the_reward_is_the_datasets_score_answer_on_the_extracted_answer():
    task = get_task("rg:basic_arithmetic:size=30")
    entry = task.train_entries[0]
    prompt = task.format_prompt(entry["question"])
    dataset = reasoning_gym.create_dataset("basic_arithmetic", size=30, seed=0)
    for answer in (entry["answer"], "1" + entry["answer"], "zz"):  # right, partial credit, wrong
        assert task.gold_reward([prompt], [f"<answer>{answer}</answer>"]) == [dataset.score_answer(answer, entry)]


def test_answer_extraction_prefers_tags_then_gsm8k_marker_then_last_line():
    assert extract_completion_answer("<answer>1</answer> then <answer> 7 </answer>") == "7"
    assert extract_completion_answer("work it out\n#### 42\n") == "42"
    assert extract_completion_answer("first line\n  12  \n\n") == "12"
    assert extract_completion_answer("") is None


def test_task_reward_spec_and_rows_outside_the_task():
    task = get_task("rg:chain_sum:size=20")
    reward = build_reward("task:rg:chain_sum:size=20")
    examples = task.sft_examples(5, seed=0)
    prompts = [ex["prompt"] for ex in examples]
    assert reward(prompts, [ex["completion"] for ex in examples]) == [1.0] * 5
    # A prompt rendered into a chat template still finds its question; an unknown one needs its answer.
    templated = [f"<|user|>\n{p}<|assistant|>\n" for p in prompts]
    assert task.gold_reward(templated, [ex["completion"] for ex in examples]) == [1.0] * 5
    assert task.gold_reward(["What is 2 + 2?"], ["<answer>4</answer>"], answer=["4"]) == [1.0]
    with pytest.raises(ValueError, match="answer"):
        task.gold_reward(["What is 2 + 2?"], ["<answer>4</answer>"])


def test_preference_pairs_rank_the_right_answer_above_a_wrong_one():
    task = get_task("rg:basic_arithmetic:size=100")
    pairs = task.preference_pairs(20, seed=0)
    train = {task.format_prompt(e["question"]) for e in task.train_entries}
    for pair in pairs:
        assert pair["prompt"] in train
        assert task.gold_reward([pair["prompt"]] * 2, [pair["chosen"], pair["rejected"]])[0] == 1.0
    held_out = task.preference_pairs(10, seed=0, held_out=True)
    assert not {p["prompt"] for p in held_out} & train


def test_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"unknown reasoning-gym dataset 'leg_countin'.*leg_counting.*tandem tasks"):
        get_task("rg:leg_countin")
    with pytest.raises(ValueError, match="no_such_option.*its options: .*max_animals"):
        get_task("rg:leg_counting:no_such_option=1")
    with pytest.raises(ValueError, match="raise eval_size"):
        get_task("rg:basic_arithmetic:size=10:eval_size=5").eval_prompts(6)


def test_max_new_tokens_fits_the_longest_answer_or_is_given():
    task = get_task("rg:leg_counting:size=20")
    longest = max(len(e["answer"]) for e in task.train_entries + task.eval_entries)
    assert task.max_new_tokens >= len("<answer></answer>") + longest
    assert get_task("rg:leg_counting:size=20:max_new_tokens=256").max_new_tokens == 256


def test_tandem_tasks_lists_the_rg_spec_and_the_dataset_names():
    from typer.testing import CliRunner

    from tandem.cli import app

    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0 and "rg:DATASET" in result.output
    assert "basic_arithmetic" in result.output and "leg_counting" in result.output


def test_only_a_task_with_a_positional_option_takes_a_bare_value():
    with pytest.raises(ValueError, match="expected option 'key=value', got 'digits'"):
        get_task("arithmetic:digits")
    assert get_task("rg:chain_sum:size=5", seed=7).seed == 7  # keyword arguments still win over the spec
