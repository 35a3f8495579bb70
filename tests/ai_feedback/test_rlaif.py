"""The built-in heuristic judge, and judge verdicts as RL rewards (unusable verdicts never become rewards)."""

import pytest

from tandem.ai_feedback.constitution import load_constitution
from tandem.ai_feedback.rlaif import HeuristicScore, RLAIFConfig, build_rlaif_judge, relevance
from tandem.judges import FunctionJudge, JudgeReward
from tandem.rewards import score_safely

PROMPT = "Customer: Where can I find the blue lamp?\nAssistant:"


def test_relevance_is_the_share_of_long_prompt_words_repeated():
    # long words of the prompt (role labels aside): where, find, blue, lamp
    assert relevance(PROMPT, " The blue lamp is in aisle 3.") == pytest.approx(2 / 4)
    assert relevance(PROMPT, " Where? Find the BLUE lamp.") == 1.0
    assert relevance(PROMPT, " I have no idea.") == 0.0
    assert relevance("Customer: Hi", " hello") == 0.0


def test_heuristic_score_combines_rules_kept_and_relevance():
    score = HeuristicScore(load_constitution("polite"))
    polite, rude, off_topic_rude = score([PROMPT] * 3, [" The blue lamp is in aisle 3.", " Ugh. The blue lamp is in aisle 3.",
                                                        " Ugh. Let me tell you about religion."])
    assert polite == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert rude == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)
    assert off_topic_rude == 0.0
    judge = build_rlaif_judge("heuristic")
    assert judge.compare([PROMPT], [" The blue lamp is in aisle 3."], [" Ugh. The blue lamp is in aisle 3."])[0].value > 0.5


def test_judge_reward_gives_none_for_unusable_verdicts_and_score_safely_skips_them():
    judge = FunctionJudge(score=lambda prompts, responses: [None if "??" in r else 0.25 * len(r.split()) for r in responses])
    reward = JudgeReward(judge)
    scored = score_safely(reward, [PROMPT] * 3, [" a b", "??", " a b c d e f"], on_error="skip")
    assert scored.rewards == [0.5, None, None]  # None: unusable; 1.5 is outside [0, 1]: invalid, also unusable
    assert judge.stats.n_unusable == 2 and dict(judge.stats.unusable) == {"invalid_value": 2}


def test_judge_reward_against_a_reference_column():
    judge = build_rlaif_judge("heuristic")
    reward = JudgeReward(judge, reference="reference")
    better, worse = reward([PROMPT] * 2, [" The blue lamp is in aisle 3.", " Ugh. No idea."],
                           reference=[" No idea.", " No idea."])
    assert better > 0.5 > worse
    with pytest.raises(KeyError, match="reference"):
        reward([PROMPT], [" x"])


def test_config_refuses_direct_dpo(tmp_path):
    from tandem.ai_feedback.rlaif import run_rlaif

    with pytest.raises(ValueError, match="distilled"):
        run_rlaif(RLAIFConfig(out=tmp_path, model=tmp_path, mode="direct", algorithm="dpo"))
