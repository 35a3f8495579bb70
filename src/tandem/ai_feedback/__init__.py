"""Learning from AI and verbal feedback: RLAIF (Lee et al. 2023), Constitutional AI (Bai et al. 2022b), rewards from
verbal feedback (Sumers et al. 2021).

    from tandem.ai_feedback import run_rlaif, RLAIFConfig       # tandem rlaif
    from tandem.ai_feedback import run_cai, CAIConfig           # tandem cai
    from tandem.ai_feedback import run_verbal_reward, VerbalRewardConfig   # tandem verbal-reward

Building blocks: `load_constitution`, `critique_revise` with a `KeywordReviser` or `ModelReviser`,
`principle_judges` + `constitutional_preferences` (RL-CAI labels), `VerbalFeedbackReward` (g_phi as a reward).
The AI labels themselves (`verdict_probabilities`, `preference_rows`, `label_agreement`) and the pairs they label
(`sample_pairs`) are preference data: `tandem.preference_data.labels` and `tandem.preference_data.pairs`.
"""

from tandem.ai_feedback.cai import (
    CAIConfig, KeywordReviser, ModelReviser, constitutional_preferences, critique_revise, principle_judges, run_cai,
)
from tandem.ai_feedback.constitution import Constitution, ConstitutionError, Principle, load_constitution
from tandem.ai_feedback.rlaif import HeuristicScore, RLAIFConfig, build_rlaif_judge, run_rlaif
from tandem.ai_feedback.verbal import (
    FEEDBACK_WRITERS, VerbalFeedbackReward, VerbalRewardConfig, pearson, run_verbal_reward, spearman, write_feedback,
)

__all__ = [
    "CAIConfig", "Constitution", "ConstitutionError", "FEEDBACK_WRITERS", "HeuristicScore", "KeywordReviser",
    "ModelReviser", "Principle", "RLAIFConfig", "VerbalFeedbackReward", "VerbalRewardConfig",
    "build_rlaif_judge", "constitutional_preferences", "critique_revise", "load_constitution", "pearson",
    "principle_judges", "run_cai", "run_rlaif", "run_verbal_reward", "spearman", "write_feedback",
]
