"""ArithmeticTask: deterministic data, held-out eval split, and an exact gold verifier."""

import re

import pytest

from tandem.tasks import get_task
from tandem.tasks.arithmetic import answer_from_prompt, extract_final_answer

PROMPT = "Question: What is 37 + 48?\nAnswer:"


@pytest.fixture
def task():
    return get_task("arithmetic")


def test_same_seed_same_data_and_different_seed_different_data(task):
    assert task.sft_examples(50, seed=1) == task.sft_examples(50, seed=1)
    assert task.sft_examples(50, seed=1) != task.sft_examples(50, seed=2)
    assert task.pretrain_corpus(20, seed=3) == task.pretrain_corpus(20, seed=3)
    assert task.preference_pairs(30, seed=4, label_noise=0.2) == task.preference_pairs(30, seed=4, label_noise=0.2)
    assert task.eval_prompts(30, seed=5) == task.eval_prompts(30, seed=5)
    assert task.eval_prompts(30, seed=5) != task.eval_prompts(30, seed=6)


def test_eval_prompts_never_appear_in_training_data(task):
    eval_prompts = {row["prompt"] for row in task.eval_prompts(1000)}
    train_prompts = {row["prompt"] for row in task.sft_examples(3000)}
    train_prompts |= {row["prompt"] for row in task.preference_pairs(2000)}
    train_prompts |= {row["prompt"] for row in task.unpaired_examples(1000)}
    assert len(eval_prompts) == 1000  # distinct while the held-out space allows
    assert not eval_prompts & train_prompts
    questions = {p.removeprefix("Question: What is ").split("?")[0] for p in eval_prompts}
    corpus = "\n".join(task.pretrain_corpus(2000))
    corpus_equations = set(re.findall(r"(?<![\d-])(\d+ [-+*] \d+) =", corpus))
    assert len(corpus_equations) > 500
    assert not questions & corpus_equations  # no held-out equation appears in the pretraining corpus


def test_formats_follow_gsm8k_convention(task):
    example = task.sft_examples(1)[0]
    assert example["prompt"].startswith("Question: What is ") and example["prompt"].endswith("?\nAnswer:")
    assert "\n#### " in example["completion"]
    assert not any("Question:" in doc for doc in task.pretrain_corpus(200))


@pytest.mark.parametrize(
    "completion, expected",
    [
        (" 37 + 48 = 85\n#### 85", 1.0),
        (" 37 + 48 = 86\n#### 86", 0.0),
        (" 37 + 48 = 85\n#### 86", 0.0),  # the `####` answer wins over the working
        (" 37 + 48 = 86\n#### 85", 1.0),
        (" #### 12 then #### 85", 1.0),  # last `####` counts
        (" the sum is 85", 1.0),  # fallback: last number
        (" 85 or maybe 84", 0.0),
        (" ####", 0.0),
        (" I am not sure.", 0.0),
        ("", 0.0),
    ],
)
def test_gold_reward_on_hand_written_completions(task, completion, expected):
    assert task.gold_reward([PROMPT], [completion]) == [expected]


def test_gold_reward_handles_negative_numbers_and_answer_column(task):
    prompt = "Question: What is 12 - 48?\nAnswer:"
    assert task.gold_reward([prompt], [" 12 - 48 = -36\n#### -36"]) == [1.0]
    assert task.gold_reward([prompt], [" 12 - 48 = 36\n#### 36"]) == [0.0]
    # The answer column overrides parsing the prompt.
    assert task.gold_reward([prompt], [" #### 7"], answer=[7]) == [1.0]


def test_answer_parsing_helpers():
    assert extract_final_answer("#### 1,234") == 1234.0
    assert extract_final_answer("x = -5.5 done") == -5.5
    assert extract_final_answer("nothing here") is None
    assert answer_from_prompt("Question: What is 7 * 6?\nAnswer:") == 42
    with pytest.raises(ValueError):
        answer_from_prompt("no question")


def test_eval_answers_are_correct(task):
    rows = task.eval_prompts(100)
    assert [row["answer"] for row in rows] == [answer_from_prompt(row["prompt"]) for row in rows]
    completions = [f" #### {row['answer']}" for row in rows]
    assert task.gold_reward([r["prompt"] for r in rows], completions, answer=[r["answer"] for r in rows]) == [1.0] * 100


def test_sft_wrong_fraction_within_tolerance():
    task = get_task("arithmetic", wrong_fraction=0.2)
    examples = task.sft_examples(3000)
    gold = task.gold_reward([e["prompt"] for e in examples], [e["completion"] for e in examples])
    assert abs(gold.count(0.0) / len(gold) - 0.2) < 0.03
    clean = get_task("arithmetic", wrong_fraction=0.0).sft_examples(500)
    assert set(task.gold_reward([e["prompt"] for e in clean], [e["completion"] for e in clean])) == {1.0}


def test_preference_pairs_prefer_correct_answers(task):
    pairs = task.preference_pairs(500)
    prompts = [p["prompt"] for p in pairs]
    assert set(task.gold_reward(prompts, [p["chosen"] for p in pairs])) == {1.0}
    assert set(task.gold_reward(prompts, [p["rejected"] for p in pairs])) == {0.0}


def test_label_noise_flips_roughly_the_configured_fraction(task):
    pairs = task.preference_pairs(2000, seed=0, label_noise=0.3)
    flipped = task.gold_reward([p["prompt"] for p in pairs], [p["chosen"] for p in pairs]).count(0.0)
    assert abs(flipped / 2000 - 0.3) < 0.04
    with pytest.raises(ValueError):
        task.preference_pairs(1, label_noise=1.5)


def test_unpaired_labels_match_gold_reward(task):
    examples = task.unpaired_examples(400)
    gold = task.gold_reward([e["prompt"] for e in examples], [e["completion"] for e in examples])
    assert [e["label"] for e in examples] == [g > 0.5 for g in gold]
    assert 0.3 < sum(e["label"] for e in examples) / 400 < 0.7


def test_digits_and_operations_are_configurable():
    task = get_task("arithmetic", digits=3, operations=("*",))
    rows = task.eval_prompts(50)
    assert all(" * " in row["prompt"] for row in rows)
    assert all(100 <= int(row["prompt"].split("What is ")[1].split(" ")[0]) <= 999 for row in rows)
    with pytest.raises(ValueError):
        get_task("arithmetic", operations=("/",))


def test_multiplier_digits_give_multi_digit_products():
    task = get_task("arithmetic:digits=3:operations=*:multiplier_digits=3")
    rows = task.eval_prompts(50)
    factors = [row["prompt"].split("What is ")[1].rstrip("?\nAnswer:").split(" * ") for row in rows]
    assert all(100 <= int(a) <= 999 and 100 <= int(b) <= 999 for a, b in factors)
    assert [row["answer"] for row in rows] == [int(a) * int(b) for a, b in factors]
    assert get_task("arithmetic:digits=3:operations=*").eval_prompts(5)[0]["prompt"].split(" * ")[1][0].isdigit()
    with pytest.raises(ValueError, match="multiplier_digits"):
        get_task("arithmetic:multiplier_digits=0")


def test_missing_answers_fall_back_to_the_prompt(task):
    prompts = [PROMPT, "Question: What is 12 - 48?\nAnswer:"]
    assert task.gold_reward(prompts, [" #### 85", " #### -36"], answer=[None, -36]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="answer"):
        task.gold_reward(["tell me a joke"], [" #### 1"])
