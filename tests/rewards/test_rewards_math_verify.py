"""`verifier:math`: Hugging Face's Math-Verify compares LaTeX, boxed, fractional and numeric answers."""

import sys
import threading

import pytest

from tandem.rewards import RewardSpecError, build_reward, get_verifier

pytest.importorskip("math_verify")


@pytest.fixture(scope="module")
def math():
    return build_reward("verifier:math")


@pytest.mark.parametrize("completion, reference, expected", [
    ("so the answer is \\boxed{\\frac{1}{2}}", "1/2", 1.0),
    ("x = 0.5", "\\frac{1}{2}", 1.0),
    ("$\\frac{6}{12}$", 0.5, 1.0),
    ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", 1.0),  # a bare LaTeX reference is read as LaTeX, not as its first number
    ("first 3, then \\boxed{\\frac{3}{4}}", "$\\frac{3}{4}$", 1.0),
    ("Total:\n#### 72", "Janet sells 16 - 3 - 4 = 9 eggs ... #### 72", 1.0),  # GSM8K references as `numeric` reads them
    ("\\boxed{\\frac{2}{3}}", "0.5", 0.0),
    ("\\boxed{2\\sqrt{2}}", "2", 0.0),
    ("I do not know", "3", 0.0),
])
def test_math_verifier_compares_final_answers(math, completion, reference, expected):
    assert math(["q"], [completion], answer=[reference]) == [expected]


def test_math_verifier_columns_follow_the_numeric_conventions(math):
    assert math(["q", "q"], ["\\boxed{1}", "\\boxed{1}"], answer=[None, 1]) == [None, 1.0]
    assert get_verifier("math", column="gold")(["q"], ["\\boxed{7}"], gold=["7"]) == [1.0]
    with pytest.raises(ValueError, match="needs the dataset column 'answer'"):
        math(["q"], ["1"])
    with pytest.raises(ValueError, match="row 0: reference"):
        math(["q"], ["1"], answer=["no maths here"])


def test_math_verifier_works_outside_the_main_thread(math):
    # Math-Verify's signal-based timeout fails off the main thread; the verifier runs there without one.
    results = []
    worker = threading.Thread(target=lambda: results.append(math(["q"], ["\\boxed{\\frac{1}{2}}"], answer=["0.5"])))
    worker.start()
    worker.join()
    assert results == [[1.0]]


def test_missing_math_verify_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify now raises ImportError
    with pytest.raises(RewardSpecError, match="pip install math-verify"):
        build_reward("verifier:math")


def test_a_bare_latex_answer_after_the_gsm8k_marker_is_read_as_latex(math):
    assert math(["q"], ["so\n#### 2\\sqrt{2}"], answer=["\\sqrt{8}"]) == [1.0]
    assert math(["q"], ["so\n#### 2\\sqrt{3}"], answer=["\\sqrt{8}"]) == [0.0]
