"""`tandem grpo`: RL with verifiable rewards (RLVR, Lambert et al. 2024), group-relative advantages (GRPO and kin).

Several completions per prompt; each completion's advantage compares its reward with its group's
(GRPO: (r - mean)/std, Shao et al. 2024; Dr. GRPO: r - mean, Liu et al. 2025; RLOO: leave-one-out,
Ahmadian et al. 2024; REINFORCE++, Hu 2025). The KL to the reference is a loss term (k3 by default)
rather than a reward penalty. DAPO options (Yu et al. 2025): clip-higher (`--clip-high 0.28`),
token-level loss (`--loss-agg token-mean`) and overlong reward shaping (`--overlong-buffer`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, Field

from tandem.algorithms.advantages import masked_mean
from tandem.algorithms.kl import kl_estimate
from tandem.trainers.online import OnlineRLConfig, OnlineTrainer, place_scores, run_online


class OverlongOptions(BaseModel):
    """DAPO's overlong reward shaping (Yu et al. 2025)."""

    overlong_buffer: int = Field(0, ge=0, description="DAPO overlong shaping: penalise the last N tokens before --max-new-tokens linearly (0: off).")
    overlong_penalty: float = Field(1.0, ge=0, description="Penalty at the length limit for overlong shaping.")


class GRPOConfig(OnlineRLConfig, OverlongOptions):
    out: Path = Field(Path("runs/grpo"), description="Run directory.")
    task: str = Field("arithmetic", description="Built-in task for prompts (and its gold reward).")
    reward: str = Field("task", description="Reward: 'task' (the task's verifiable gold reward), verifier:numeric, module:function, ...")
    samples_per_prompt: int = Field(8, ge=2, description="Completions per prompt: the group of GRPO / RLOO.")
    batch_size: int = Field(8, ge=1, description="Prompts per rollout step.")
    micro_batch_size: int = Field(32, ge=1, description="Sequences per forward pass in the update.")
    kl_coef: float = Field(0.0, ge=0, description="Weight of the KL-to-reference loss term (GRPO paper: 0.04; DAPO: 0).")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate of AdamW.")


def overlong_penalty(lengths: torch.Tensor, max_new_tokens: int, buffer: int, penalty: float) -> torch.Tensor:
    """DAPO's soft overlong punishment: 0 up to L_max - buffer, then falling linearly to -penalty at L_max."""
    excess = (lengths.float() - (max_new_tokens - buffer)).clamp(min=0)
    return -penalty * (excess / buffer).clamp(max=1.0)


class GRPOTrainer(OnlineTrainer):
    name = "grpo"

    def token_rewards(self, scores, mask, old_logp, ref_logp, batch):
        terms = {}
        if self.config.overlong_buffer:
            shaping = overlong_penalty(mask.sum(-1), self.max_new_tokens, self.config.overlong_buffer,
                                       self.config.overlong_penalty)
            scores = scores + shaping
            terms["overlong_penalty"] = float(shaping.mean())
        return place_scores(scores, mask, batch), terms

    def extra_losses(self, logits, logp, values, data, rows, mask):
        per_token, stats = super().extra_losses(logits, logp, values, data, rows, mask)
        if self.kl_controller.value:
            kl = kl_estimate(self.config.kl_estimator, logp, data.ref_logp[rows])
            per_token = per_token + self.kl_controller.value * kl
            stats["kl_loss"] = masked_mean(kl.detach(), mask)
        return per_token, stats


def run_grpo(config: GRPOConfig):
    return run_online(config, GRPOTrainer)
