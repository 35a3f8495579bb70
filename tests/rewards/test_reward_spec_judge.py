"""`--reward judge:...` reaches the judges through the reward spec, and scores through score_safely."""

from tandem.rewards import build_reward, score_safely


def test_a_judge_spec_builds_a_reward_whose_unusable_verdicts_are_reported(tmp_path, monkeypatch):
    module = tmp_path / "my_judge.py"
    module.write_text("def score(prompts, responses):\n"
                      "    return [None if 'skip' in r else min(len(r), 10) / 10 for r in responses]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = build_reward("judge:python:my_judge:score")
    scored = score_safely(reward, ["p", "p", "p"], ["abc", "abcdefghijkl", "skip me"], {}, on_error="skip")
    assert scored.rewards[:2] == [0.3, 1.0]
    assert scored.rewards[2] is None
