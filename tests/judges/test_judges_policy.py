"""The judge interface with function and scripted backends: unusable-verdict policies, caching, rewards, specs."""

import logging

import pytest

from tandem.judges import (
    FunctionJudge,
    JudgeReward,
    JudgeSpecError,
    Question,
    TemplateJudge,
    UnusableVerdictError,
    Verdict,
    VerdictCache,
    build_judge,
    build_judge_reward,
    parse_judge_spec,
    swap_log_odds,
)
from tandem.rewards.spec import build_reward
from tandem.rewards import score_safely


def length_score(prompts, responses):
    """A toy judge: longer is better, up to 10 characters; the word 'crash' gives an invalid verdict."""
    return [float("nan") if "crash" in r else min(len(r), 10) / 10 for r in responses]


class ScriptedJudge(TemplateJudge):
    """A template judge whose backend answers from a table: P(first shown better) by response text, or failures."""

    identity = "scripted"

    def __init__(self, table, **options):
        super().__init__(**options)
        self.table, self.asked = table, []

    def _ask(self, questions: list[Question]) -> list[Verdict]:
        self.asked.extend(questions)
        answers = []
        for question in questions:
            shown = question.messages[-1]["content"]
            first = shown.split("Response A: ")[1].split("\n")[0] if "Response A: " in shown else shown.split("Response: ")[1].split("\n")[0]
            answer = self.table[first]
            answers.append(Verdict(None, reason=answer) if isinstance(answer, str) else Verdict(answer, method="token_probs"))
        return answers


def test_function_judge_scores_and_compares_through_scores():
    judge = FunctionJudge(score=length_score)
    verdicts = judge.score(["p", "p"], ["abc", "abcdefghijkl"])
    assert [v.value for v in verdicts] == [0.3, 1.0] and all(v.method == "function" for v in verdicts)
    [pair] = judge.compare(["p"], ["abcdefghij"], ["ab"])
    assert pair.value == pytest.approx((1 + 1.0 - 0.2) / 2)


@pytest.mark.parametrize("policy, expected", [("skip", None), ("neutral", 0.5)])
def test_unusable_verdicts_follow_the_policy_and_are_counted_and_logged(policy, expected, caplog):
    judge = FunctionJudge(score=length_score, on_unusable=policy)
    with caplog.at_level(logging.WARNING, logger="tandem.judges"):
        verdicts = judge.score(["p1", "p2", "p3"], ["ok", "crash here", "fine"])
    assert verdicts[1].value == expected and verdicts[1].reason == "invalid_value" and not verdicts[1].usable
    assert verdicts[0].usable and verdicts[2].usable
    assert judge.stats.unusable == {"invalid_value": 1} and judge.stats.samples == 3
    assert judge.stats.examples[0]["response"] == "crash here"
    assert "crash here" in caplog.text and "invalid_value" in caplog.text


def test_raise_policy_names_the_sample():
    judge = FunctionJudge(score=length_score, on_unusable="raise")
    with pytest.raises(UnusableVerdictError, match="sample 1.*crash"):
        judge.score(["p", "q"], ["fine", "crash"])


def test_function_failures_become_unusable_verdicts_not_exceptions():
    def broken(prompts, responses):
        raise RuntimeError("model offline")

    judge = FunctionJudge(score=broken)
    assert [v.reason for v in judge.score(["a", "b"], ["x", "y"])] == ["exception", "exception"]
    assert "model offline" in judge.score(["a"], ["x"])[0].detail
    judge = FunctionJudge(score=lambda prompts, responses: [0.5])
    assert judge.score(["a", "b"], ["x", "y"])[0].reason == "exception"  # wrong length
    judge = FunctionJudge(score=lambda prompts, responses: [1.5, None])
    assert [v.reason for v in judge.score(["a", "b"], ["x", "y"])] == ["invalid_value", "invalid_value"]


def test_mismatched_inputs_are_refused():
    judge = FunctionJudge(score=length_score)
    with pytest.raises(ValueError, match="2 prompts but 1"):
        judge.score(["a", "b"], ["x"])
    with pytest.raises(TypeError, match="responses_b\\[0\\]"):
        judge.compare(["a"], ["x"], [3])


def test_compare_asks_both_orders_and_debiases_a_position_biased_judge():
    # P(first shown better) = 0.9 when "good" is shown first, 0.7 when "bad" is shown first: a +0.3 first-position bias
    judge = ScriptedJudge({"good": 0.9, "bad": 0.7})
    [verdict] = judge.compare(["p"], ["good"], ["bad"])
    assert verdict.value == pytest.approx((0.9 + 1 - 0.7) / 2) and len(judge.asked) == 2
    assert judge.stats.order_disagreements == 1 and judge.stats.pairs_both_orders == 1
    one_order = ScriptedJudge({"good": 0.9, "bad": 0.7}, both_orders=False)
    assert one_order.compare(["p"], ["good"], ["bad"])[0].value == 0.9 and len(one_order.asked) == 1


def always_first(prompts, first, second):
    """P(first shown better): 0.95 whatever is shown, a little more when the first is longer (a position-only judge)."""
    return [0.96 if len(a) > len(b) else 0.94 for a, b in zip(first, second)]


def test_a_judge_that_always_answers_a_is_warned_about_once_with_the_count(caplog):
    judge = FunctionJudge(compare=always_first, both_orders=True, name="always-a")
    with caplog.at_level(logging.WARNING, logger="tandem.judges"):
        judge.compare(["p"] * 10, ["long answer"] * 10, ["short"] * 10)
        assert not caplog.records  # 10 pairs: too few to tell
        judge.compare(["p"] * 10, ["long answer"] * 10, ["short"] * 10)
        judge.compare(["p"] * 10, ["long answer"] * 10, ["short"] * 10)
    [record] = caplog.records
    assert "always-a" in record.message and "20 of 20 pairs" in record.message and "calibration='log_odds'" in record.message
    assert "score mode" in record.message and "first shown: 20" in record.message
    stats = judge.stats.as_dict()
    assert stats["position_only_fraction"] == 1.0 and stats["position_only"] == {"first": 30} and stats["order_disagreements"] == 30


def test_a_judge_that_follows_content_is_not_warned_about(caplog):
    judge = FunctionJudge(compare=lambda p, a, b: [0.9 if len(x) > len(y) else 0.1 for x, y in zip(a, b)], both_orders=True)
    with caplog.at_level(logging.WARNING, logger="tandem.judges"):
        judge.compare(["p"] * 40, ["long answer"] * 40, ["short"] * 40)
    assert not caplog.records and judge.stats.position_only_fraction == 0.0


def test_log_odds_calibration_keeps_a_position_biased_judges_confidence():
    averaged = FunctionJudge(compare=always_first, both_orders=True).compare(["p"], ["long answer"], ["short"])[0]
    calibrated = FunctionJudge(compare=always_first, both_orders=True, calibration="log_odds").compare(["p"], ["long answer"], ["short"])[0]
    assert averaged.value == pytest.approx((0.96 + 1 - 0.94) / 2)
    assert calibrated.value == pytest.approx(swap_log_odds(0.96, 0.94)) and calibrated.value > averaged.value > 0.5
    with pytest.raises(ValueError, match="calibration must be one of"):
        FunctionJudge(compare=always_first, calibration="median")
    with pytest.raises(ValueError, match="needs both_orders=True"):
        FunctionJudge(compare=always_first, calibration="log_odds")  # function judges ask one order by default


def test_verdicts_are_cached_in_memory_and_on_disk_but_failures_are_asked_again(tmp_path):
    path = tmp_path / "cache.jsonl"
    judge = ScriptedJudge({"good": 0.9, "bad": 0.2, "slow": "timeout"}, cache=str(path))
    first = judge.score(["p", "p", "p"], ["good", "bad", "slow"])
    again = judge.score(["p", "p", "p"], ["good", "bad", "slow"])
    assert [v.value for v in again] == [v.value for v in first] == [0.9, 0.2, None]
    assert [v.cached for v in again] == [True, True, False]
    assert judge.stats.cache_hits == 2 and judge.stats.questions == 4 and len(judge.asked) == 4
    fresh = ScriptedJudge({"good": 0.0, "bad": 0.0, "slow": 0.0}, cache=str(path))  # answers would differ: must not be asked
    assert [v.value for v in fresh.score(["p", "p"], ["good", "bad"])] == [0.9, 0.2] and fresh.asked == []
    assert len(VerdictCache(path)) == 2
    other_template = ScriptedJudge({"good": 0.5}, cache=str(path), score_template="score_oneshot_feedback")
    assert other_template.score(["p"], ["good"])[0].value == 0.5  # another template is another question
    path.write_text(path.read_text() + '{"key": "truncated\n')
    assert len(VerdictCache(path)) == 3  # a damaged line is skipped


def test_judge_reward_fits_score_safely_and_reports_unusable_samples():
    reward = JudgeReward(FunctionJudge(score=length_score))
    scored = score_safely(reward, ["p", "q", "r"], ["abcde", "crash", "abcdefghij"], on_error="raise")
    assert scored.rewards == [0.5, None, 1.0] and scored.report.n_not_applicable == 1
    assert reward.judge.stats.unusable == {"invalid_value": 1}
    assert reward.name.startswith("judge:")
    shifted = JudgeReward(FunctionJudge(score=length_score), scale=2, shift=-1)
    assert shifted(["p"], ["abcde"]) == [0.0]


def test_judge_reward_against_a_reference_column():
    reward = JudgeReward(FunctionJudge(score=length_score), reference="reference")
    assert reward(["p", "p"], ["abcdefghij", "a"], reference=["abcde", "abcde"]) == pytest.approx([0.75, 0.3])
    with pytest.raises(KeyError, match="reference"):
        reward(["p"], ["a"])


def test_spec_strings_parse_every_backend():
    assert parse_judge_spec("judge:local:runs/judge/model:batch_size=4:cot=true") == (
        "local", {"model": "runs/judge/model"}, {"batch_size": 4, "cot": True})
    assert parse_judge_spec("openai:http://127.0.0.1:8000/v1:llama3:8b:timeout=2.5") == (
        "openai", {"base_url": "http://127.0.0.1:8000/v1", "model": "llama3:8b"}, {"timeout": 2.5})
    assert parse_judge_spec("python:my_judges:score")[0] == "python"
    for bad in ("openai:localhost:model", "mystery:x", "local", "local:path:batch_size=4:cot"):
        with pytest.raises(JudgeSpecError):
            parse_judge_spec(bad)


def test_specs_build_judges_and_rewards(tmp_path):
    module = tmp_path / "my_judge.py"
    module.write_text("def score(prompts, responses):\n    return [0.25 for _ in responses]\n")
    judge = build_judge(f"python:{module}:score")
    assert isinstance(judge, FunctionJudge) and judge.score(["p"], ["r"])[0].value == 0.25
    remote = build_judge("openai:http://127.0.0.1:9/v1:m:timeout=3:max_retries=0:template=score_oneshot_feedback")
    assert remote.timeout == 3 and remote.max_retries == 0 and remote.score_template.examples
    reward = build_judge_reward("openai:http://127.0.0.1:9/v1:m:reference=ref:scale=2")
    assert reward.reference == "ref" and reward.scale == 2
    with pytest.raises(JudgeSpecError, match="unknown option"):
        build_judge("openai:http://127.0.0.1:9/v1:m:temprature=0")


def test_the_calibration_option_reaches_the_judge_from_a_reward_spec(tiny_model_dir):
    reward = build_reward(f"judge:local:{tiny_model_dir}:calibration=log_odds:reference=ref:batch_size=4")
    assert reward.judge.calibration == "log_odds" and reward.reference == "ref"
    [value] = reward(["Review: the film"], [" was superb."], ref=[" was dull."])
    [verdict] = reward.last_verdicts
    first, swapped = verdict.parts
    assert value == pytest.approx(swap_log_odds(first.value, swapped.value), abs=1e-12)
    assert build_reward(f"judge:local:{tiny_model_dir}").judge.calibration == "average"
    remote = build_judge("openai:http://127.0.0.1:9/v1:m:calibration=log_odds")
    assert remote.calibration == "log_odds"
    for bad, message in (("calibration=median", "must be one of"), ("calibration=log_odds:both_orders=false", "needs both_orders")):
        with pytest.raises(JudgeSpecError, match=message):  # refused before any model is loaded
            build_judge(f"local:/no/such/model:{bad}")
