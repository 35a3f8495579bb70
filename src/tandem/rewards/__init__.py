"""Rewards for online RL: every source is a function of (prompts, completions, **columns) -> list[float | None].

    reward = build_reward("0.5*verifier:format,1.0*verifier:numeric")   # or "task:arithmetic", "model:runs/rm",
                                                                          # "my_module:my_function"
    scored = score_safely(reward, prompts, completions, {"answer": answers}, on_error="skip")
    scored.rewards        # floats, None where not applicable or skipped; never NaN
    scored.report         # what was skipped and why, for the log

Sources: built-in verifiers (`VERIFIERS`, `get_verifier`), a task's gold reward (`task_gold`), a reward
model (`RewardModelScorer`), a user's callable (`load_reward_function`), and `WeightedSum`s of them.
"""

from tandem.rewards.answers import extract_answer, parse_numbers
from tandem.rewards.base import (
    NamedReward,
    RewardFunction,
    RewardSource,
    RewardSpecError,
    as_reward_source,
    load_reward_function,
    reward_name,
)
from tandem.rewards.combine import WeightedSum
from tandem.rewards.model import RewardModelScorer
from tandem.rewards.safety import ON_ERROR, RewardError, RewardReport, SampleProblem, ScoredRewards, score_safely
from tandem.rewards.spec import build_reward
from tandem.rewards.verifiers import (
    VERIFIERS,
    CodeTests,
    ExactMatch,
    FormatCheck,
    MathAnswer,
    NumericAnswer,
    RegexMatch,
    TaskGold,
    get_verifier,
    register_verifier,
)


__all__ = [
    "ON_ERROR",
    "VERIFIERS",
    "CodeTests",
    "ExactMatch",
    "FormatCheck",
    "MathAnswer",
    "NamedReward",
    "NumericAnswer",
    "RegexMatch",
    "RewardError",
    "RewardFunction",
    "RewardModelScorer",
    "RewardReport",
    "RewardSource",
    "RewardSpecError",
    "SampleProblem",
    "ScoredRewards",
    "TaskGold",
    "WeightedSum",
    "as_reward_source",
    "build_reward",
    "extract_answer",
    "get_verifier",
    "load_reward_function",
    "parse_numbers",
    "reward_name",
    "register_verifier",
    "score_safely",
]
