"""Learning from AI and verbal feedback: RLAIF (Lee et al. 2023), Constitutional AI (Bai et al. 2022b), rewards from
verbal feedback (Sumers et al. 2021).

    from tandem.feedback_rl import run_rlaif, RLAIFConfig       # tandem rlaif
    from tandem.feedback_rl import run_cai, CAIConfig           # tandem cai
    from tandem.feedback_rl import run_verbal_reward, VerbalRewardConfig   # tandem verbal-reward

Building blocks: `load_constitution`, `critique_revise` with a `KeywordReviser` or `ModelReviser`,
`principle_judges` + `constitutional_preferences` (RL-CAI labels), `ai_preferences` / `preference_rows` /
`label_agreement` (AI labels and their agreement with gold), `VerbalFeedbackReward` (g_phi as a reward).
"""

from tandem.feedback_rl.cai import (
    CAIConfig, KeywordReviser, ModelReviser, constitutional_preferences, critique_revise, principle_judges, run_cai,
)
from tandem.feedback_rl.constitution import Constitution, ConstitutionError, Principle, load_constitution
from tandem.feedback_rl.labels import ai_preferences, ensemble_probabilities, label_agreement, preference_rows, sample_pairs
from tandem.feedback_rl.rlaif import HeuristicScore, RLAIFConfig, build_rlaif_judge, run_rlaif
from tandem.feedback_rl.verbal import (
    FEEDBACK_WRITERS, VerbalFeedbackReward, VerbalRewardConfig, pearson, run_verbal_reward, spearman, write_feedback,
)

__all__ = [
    "CAIConfig", "Constitution", "ConstitutionError", "FEEDBACK_WRITERS", "HeuristicScore", "KeywordReviser",
    "ModelReviser", "Principle", "RLAIFConfig", "VerbalFeedbackReward", "VerbalRewardConfig", "ai_preferences",
    "build_rlaif_judge", "constitutional_preferences", "critique_revise", "ensemble_probabilities", "label_agreement",
    "load_constitution", "pearson", "preference_rows", "principle_judges", "run_cai", "run_rlaif", "run_verbal_reward",
    "sample_pairs", "spearman", "write_feedback",
]
