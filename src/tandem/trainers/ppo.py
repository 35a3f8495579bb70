"""`tandem ppo`: PPO-RLHF (Ouyang et al. 2022, eq. 2; Ziegler et al. 2019), maximise
E[r_phi(x, y) - beta log(p_theta(y|x) / p_SFT(y|x))] with PPO (Schulman et al. 2017).

The policy carries a value head on its last hidden state (shared backbone, as in Ziegler et al. 2019
and TRL's classic PPO). The reward model's score sits on the final token; the per-token KL to the
frozen SFT reference (k1 by default) is subtracted from every token's reward with a fixed or adaptive
coefficient; GAE turns rewards and values into advantages (whitened); the policy takes the clipped
surrogate and the value head the clipped value loss, over several epochs and minibatches per rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import ModelOutput

from tandem.algorithms.policy_losses import clipped_value_loss, explained_variance
from tandem.generation.scoring import logits_to_keep
from tandem.trainers.online import OnlineRLConfig, OnlineTrainer, place_scores, run_online

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class ValueHeadOutput(ModelOutput):
    logits: torch.Tensor | None = None
    values: torch.Tensor | None = None


class PolicyWithValueHead(nn.Module):
    """A causal LM plus a scalar value per token; saves as the plain policy directory + `value_head.safetensors`."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.normal_(self.value_head.weight, std=1e-3)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.policy.config

    @property
    def generation_config(self):
        return self.policy.generation_config

    def generate(self, *args, **kwargs):
        return self.policy.generate(*args, **kwargs)

    @property
    def generation_model(self):
        """The module `generate` runs on (a prompt's KV cache is built on it: `tandem.generation.prefix`)."""
        return self.policy

    def forward(self, input_ids, attention_mask=None, logits_to_keep: int = 0, **kwargs):
        """Logits (of the last `logits_to_keep` positions; 0: all) and a value at every position."""
        keep = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
        output = self.policy(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False,
                             **keep)
        values = self.value_head(output.hidden_states[-1].to(self.value_head.weight.dtype)).squeeze(-1)
        return ValueHeadOutput(logits=output.logits, values=values)

    def save_pretrained(self, folder, **kwargs) -> None:
        self.policy.save_pretrained(folder, **kwargs)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, str(Path(folder) / VALUE_HEAD_FILE))

    def load_checkpoint(self, folder: Path) -> None:
        from tandem.models.loading import load_weights

        load_weights(self.policy, folder)
        self.value_head.load_state_dict(load_file(str(folder / VALUE_HEAD_FILE)))


class CriticOptions(BaseModel):
    """Options of a value head and GAE (PPO; agent RL with turn-level credit)."""

    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    whiten_advantages: bool = Field(True, description="Whiten advantages over the rollout batch.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    value_clip: float | None = Field(0.2, description="Clip range of the value update (none: unclipped).")
    missing_eos_penalty: float | None = Field(None, description="Subtract this from the score of completions cut at --max-new-tokens.")


class PPOConfig(OnlineRLConfig, CriticOptions):
    out: Path = Field(Path("runs/ppo"), description="Run directory.")
    reward: str = Field("model:runs/rm/model", description="Reward: model:PATH (a tandem reward model), task, verifier:NAME, module:function, ...")
    advantage: str = Field("gae", description="Advantage estimator (gae for PPO).")
    kl_estimator: str = Field("k1", description="KL estimator of the per-token penalty in the reward.")
    kl_coef: float = Field(0.05, ge=0, description="beta: per-token KL penalty in the reward (initial value when adaptive).")
    update_epochs: int = Field(4, ge=1, description="PPO epochs over each rollout batch.")
    minibatches: int = Field(2, ge=1, description="Minibatches (optimizer steps) per epoch.")
    batch_size: int = Field(32, ge=1, description="Prompts per rollout step.")
    lr: float = Field(3e-5, gt=0, description="Peak learning rate of AdamW (pretrained models: 3e-6, TRL's PPO default).")

    pretrained_defaults = {"lr": 3e-6, "max_new_tokens": 256}


class PPOTrainer(OnlineTrainer):
    needs_values = True
    name = "ppo"

    @staticmethod
    def prepare_model(model):
        return PolicyWithValueHead(model)

    def policy_forward(self, model, input_ids, attention_mask, labels):
        output = model(input_ids=input_ids, attention_mask=attention_mask, **logits_to_keep(model, labels))
        return output.logits, output.values

    def token_rewards(self, scores, mask, old_logp, ref_logp, batch):
        terms = {}
        if self.config.missing_eos_penalty is not None:
            scores = scores - self.config.missing_eos_penalty * (~batch.ended).float()
        terms["score"] = float(scores.mean())
        # the KL penalty -beta * KL_t is folded in by the GAE estimator (its kl / kl_coef inputs)
        return place_scores(scores, mask, batch), terms

    def advantage_options(self) -> dict:
        cfg = self.config
        return {"gamma": cfg.gamma, "lam": cfg.lam, "kl_coef": self.kl_controller.value,
                "whiten_advantages": cfg.whiten_advantages}

    def extra_losses(self, logits, logp, values, data, rows, mask):
        per_token, stats = super().extra_losses(logits, logp, values, data, rows, mask)
        values = values[:, :-1].float()
        value_loss, clip_fraction = clipped_value_loss(values, data.values[rows], data.returns[rows], mask,
                                                       self.config.value_clip)
        stats["value_loss"] = float((value_loss.detach() * mask).sum() / mask.sum().clamp(min=1))
        stats["value_clip_fraction"] = float(clip_fraction)
        stats["explained_variance"] = float(explained_variance(values.detach(), data.returns[rows], mask))
        return per_token + self.config.vf_coef * value_loss, stats


def run_ppo(config: PPOConfig):
    return run_online(config, PPOTrainer)
