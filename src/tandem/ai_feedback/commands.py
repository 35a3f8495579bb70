"""CLI commands of learning from AI and verbal feedback: `tandem rlaif`, `tandem cai`, `tandem verbal-reward`."""

from __future__ import annotations

from collections.abc import Callable


def _printing(run: Callable[[object], dict]) -> Callable[[object], dict]:
    def command(config) -> dict:
        report = run(config)
        print((config.out / "report.md").read_text())
        return report

    return command


def register(add_command) -> None:
    from tandem.ai_feedback.cai import CAIConfig, run_cai
    from tandem.ai_feedback.rlaif import RLAIFConfig, run_rlaif
    from tandem.ai_feedback.verbal import VerbalRewardConfig, run_verbal_reward

    add_command("rlaif", RLAIFConfig, _printing(run_rlaif),
                "RLAIF (Lee et al. 2023): a judge's verdicts as the RL reward (direct), or AI preference labels "
                "-> reward model -> PPO / DPO (distilled); reports AI-label agreement with gold and gold reward "
                "before/after.")
    add_command("cai", CAIConfig, _printing(run_cai),
                "Constitutional AI (Bai et al. 2022b): SL-CAI (critique -> revise -> SFT) and RL-CAI (AI labels "
                "from the principles -> DPO or r_const -> PPO); reports rule-violation rate and helpfulness "
                "before/after.")
    add_command("verbal-reward", VerbalRewardConfig, _printing(run_verbal_reward),
                "Reward from verbal feedback (Sumers et al. 2021): train r = g_phi(prompt, response, feedback), "
                "then RL with it; reports g_phi's correlation with gold and the gold reward gained.")
