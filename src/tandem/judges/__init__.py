"""Judges: the AI critic of RLAIF (Lee et al. 2023) and Constitutional AI (Bai et al. 2022b), and one-shot judging
from a single in-context example (Brown et al. 2020; LLM-as-a-judge, Zheng et al. 2023).

    judge = LocalJudge("runs/judge/model")                               # answer-token probabilities
    judge = OpenAIJudge("http://127.0.0.1:8000/v1", "model", cot=True)    # any OpenAI-compatible server
    judge = FunctionJudge(score=my_score)                                 # a Python function
    judge = build_judge("openai:http://127.0.0.1:8000/v1:model:timeout=10")

    judge.score(prompts, responses)            -> list[Verdict]   value in [0, 1], None when unusable
    judge.compare(prompts, responses_a, responses_b) -> list[Verdict]   value = P(a better), both orders combined
    JudgeReward(judge)                         a reward source for the RL trainers
    judge.stats                                questions, cache hits, unusable verdicts by reason

Prompt templates are YAML files (`templates/*.yaml`, `load_template`), with optional in-context examples.
"""

from tandem.judges.base import (
    CALIBRATIONS,
    NEUTRAL,
    ON_UNUSABLE,
    Judge,
    JudgeStats,
    Question,
    TemplateJudge,
    UnusableVerdictError,
    Verdict,
    check_calibration,
    combine_orders,
    position_only,
    swap_average,
    swap_log_odds,
)
from tandem.judges.cache import VerdictCache, verdict_key
from tandem.judges.function import FunctionJudge, compare_from_scores
from tandem.judges.reward import JudgeReward
from tandem.judges.spec import JudgeSpecError, build_judge, build_judge_reward, judge_reward_from_spec, parse_judge_spec
from tandem.judges.templates import JudgeExample, JudgeTemplate, TemplateError, builtin_templates, load_template


def __getattr__(name: str):
    # the model and HTTP backends import torch / httpx: only when asked for
    if name == "LocalJudge":
        from tandem.judges.local import LocalJudge

        return LocalJudge
    if name == "OpenAIJudge":
        from tandem.judges.remote import OpenAIJudge

        return OpenAIJudge
    raise AttributeError(f"module 'tandem.judges' has no attribute {name!r}")


__all__ = [
    "CALIBRATIONS",
    "NEUTRAL",
    "ON_UNUSABLE",
    "FunctionJudge",
    "Judge",
    "JudgeExample",
    "JudgeReward",
    "JudgeSpecError",
    "JudgeStats",
    "JudgeTemplate",
    "LocalJudge",
    "OpenAIJudge",
    "Question",
    "TemplateError",
    "TemplateJudge",
    "UnusableVerdictError",
    "Verdict",
    "VerdictCache",
    "build_judge",
    "build_judge_reward",
    "builtin_templates",
    "check_calibration",
    "combine_orders",
    "compare_from_scores",
    "judge_reward_from_spec",
    "load_template",
    "parse_judge_spec",
    "position_only",
    "swap_average",
    "swap_log_odds",
    "verdict_key",
]
