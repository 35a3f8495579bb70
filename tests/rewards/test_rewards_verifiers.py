"""Built-in verifiers on hand-written cases: numeric answers, exact match, regex/format, task gold."""

import pytest

from tandem.rewards import RewardSpecError, VERIFIERS, extract_answer, get_verifier, parse_numbers
from tandem.tasks import get_task


def numeric(completions, answers, **options):
    return get_verifier("numeric", **options)([""] * len(completions), completions, answer=answers)


def test_registry_holds_every_builtin_verifier():
    assert {"exact_match", "numeric", "regex", "format", "task_gold"} <= set(VERIFIERS)
    assert get_verifier("numeric").name == "numeric"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x = -3/4, 10-3 and (-2)", [-0.75, 10.0, 3.0, -2.0]),
        ("1,234.5 then .5 then 1,2", [1234.5, 0.5, 1.0, 2.0]),
        ("12,3456", [12.0, 3456.0]),
        ("no digits", []),
    ],
)
def test_parse_numbers_reads_separators_signs_decimals_and_fractions(text, expected):
    assert parse_numbers(text) == expected


def test_extraction_prefers_hashes_then_boxed_then_last_number():
    assert extract_answer("3 apples\n#### 5\nthat makes 6 with the core") == 5.0
    assert extract_answer(r"so \boxed{42} (checked against 41)") == 42.0
    assert extract_answer(r"\boxed{\frac{3}{4}} not 9") == 0.75
    assert extract_answer(r"\boxed{x^{2}} so 7") == 2.0  # nested braces: the box holds a number
    assert extract_answer("first 3, then 8") == 8.0
    assert extract_answer("#### none here, but 4 later") == 4.0
    assert extract_answer("I am not sure.") is None


def test_numeric_gsm8k_hashes_with_thousands_separator_and_sign():
    completions = [" 1000 + 234 = 1,234\n#### 1,234", " 3 - 10 = -7\n#### -7", " 3 - 10 = -7\n#### -7"]
    assert numeric(completions, [1234, -7, 7]) == [1.0, 1.0, 0.0]


def test_numeric_boxed_last_number_and_missing_number():
    completions = [r"The answer is \boxed{42}.", "12 apples, then 15 in total", "I do not know", "10-3"]
    assert numeric(completions, [42, 15, 0, 3]) == [1.0, 1.0, 0.0, 1.0]


def test_numeric_tolerance_absolute_and_relative():
    assert numeric(["#### 3.1416"], [3.14159]) == [0.0]
    assert numeric(["#### 3.1416"], [3.14159], tolerance=1e-3) == [1.0]
    assert numeric(["#### 1010"], [1000], relative_tolerance=0.02) == [1.0]
    assert numeric(["#### 1030"], [1000], relative_tolerance=0.02) == [0.0]


def test_numeric_fractions_are_optional():
    assert numeric(["it is 3/4"], [0.75]) == [1.0]
    assert numeric(["it is 3/4"], [0.75], fractions=False) == [0.0]
    assert numeric(["it is 3/4"], [4], fractions=False) == [1.0]


def test_numeric_reference_text_none_and_missing_column():
    solution = "Natalia sold 48 clips in April and 24 in May.\n#### 72"
    assert numeric(["#### 72", "#### 71", "#### 72"], [solution, solution, None]) == [1.0, 0.0, None]
    assert numeric(["#### 1,234"], ["1,234"]) == [1.0]
    with pytest.raises(ValueError, match="holds no number"):
        numeric(["#### 1"], ["unknown"])
    with pytest.raises(ValueError, match="needs the dataset column 'answer'"):
        get_verifier("numeric")(["q"], ["#### 1"], label=[1])


def test_exact_match_normalises_whitespace_and_optionally_case():
    exact = get_verifier("exact_match")
    completions = ["  Paris \n", "New   York", "paris", "Rome"]
    references = ["Paris", "New York", "Paris", None]
    assert exact([""] * 4, completions, answer=references) == [1.0, 1.0, 0.0, None]
    folded = get_verifier("exact_match", ignore_case=True, column="city")
    assert folded([""] * 2, ["paris", "lyon"], city=["PARIS", "Paris"]) == [1.0, 0.0]


def test_regex_searches_or_matches_whole_text():
    answer_line = get_verifier("regex", pattern=r"#### -?\d+")
    assert answer_line([""] * 3, [" 2 + 2 = 4\n#### 4", "#### -12", "4"]) == [1.0, 1.0, 0.0]
    whole = get_verifier("regex", pattern=r"\d+", full_match=True)
    assert whole([""] * 2, ["123", "123 apples"]) == [1.0, 0.0]


def test_format_defaults_to_the_gsm8k_final_answer_line():
    check = get_verifier("format")
    completions = [" 37 + 48 = 85\n#### 85", "#### -1,234.5", " 37 + 48 = 85", "#### eighty", "#### 85 apples"]
    assert check([""] * 5, completions) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_task_gold_wraps_the_task_gold_reward():
    reward = get_verifier("task_gold", task="arithmetic")
    task = get_task("arithmetic")
    rows = task.eval_prompts(4, seed=0)
    prompts = [row["prompt"] for row in rows]
    completions = [f"\n#### {row['answer']}" for row in rows[:2]] + ["#### 0", "no idea"]
    expected = task.gold_reward(prompts, completions)
    assert reward(prompts, completions) == expected == [1.0, 1.0, 0.0, 0.0]
    assert reward.name == "task:arithmetic"


def test_bad_verifier_names_and_options_are_reported():
    with pytest.raises(RewardSpecError, match="unknown verifier 'numerc'.*numeric"):
        get_verifier("numerc")
    with pytest.raises(RewardSpecError, match="no option tolerence"):
        get_verifier("numeric", tolerence=0.1)
    with pytest.raises(RewardSpecError, match="pattern"):
        get_verifier("regex")
    with pytest.raises(RewardSpecError, match="bad regular expression"):
        get_verifier("regex", pattern="(unclosed")
    with pytest.raises(RewardSpecError, match="unknown task"):
        get_verifier("task_gold", task="chess")
