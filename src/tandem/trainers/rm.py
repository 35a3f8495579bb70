"""`tandem rm`: a scalar-head reward model trained with the Bradley-Terry loss (Bradley & Terry 1952;
Ouyang et al. 2022, eq. 1): -log sigma(r(x, y_w) - r(x, y_l)).

The model is `AutoModelForSequenceClassification` with one label on the causal-LM backbone, the same
layout TRL and OpenRLHF use, so plain transformers loads the result; the reward of a sequence is the
head's output at its last real token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from tandem.algorithms.losses import bradley_terry_loss
from tandem.data import pad_preference_batch, tokenize_preference
from tandem.models.loading import add_lora, load_reward_model, save_model
from tandem.trainers.loop import LossOutput, Trainer, TrainResult
from tandem.trainers.sft import FinetuneSourceConfig
from tandem.trainers.sources import prepare_finetune


class RMConfig(FinetuneSourceConfig):
    out: Path = Field(Path("runs/rm"), description="Run directory.")
    model: Path = Field(Path("runs/sft/model"), description="Causal-LM directory for the backbone (or a reward model to continue).")
    label_noise: float = Field(0.0, ge=0, le=0.5, description="Fraction of built-in task pairs whose labels are flipped.")
    margin: float = Field(0.0, description="Margin m in -log sigma(r_w - r_l - m); a per-record 'margin' field overrides it.")
    center_coefficient: float = Field(0.0, ge=0, description="Weight of (r_w + r_l)^2, keeping rewards centred on zero.")
    epochs: float = Field(2.0, gt=0, description="Passes over the training data (used when --max-steps is not set).")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate of AdamW (pretrained models: 1e-5, TRL's default).")

    pretrained_defaults = {"lr": 1e-5}


def pair_rewards(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen (first half of the batch) and rejected (second half) sequences, one forward pass."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    rewards = rewards.squeeze(-1).float()
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


class RewardModelTrainer(Trainer):
    name = "rm"

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_preference_batch(examples, self.tokenizer.pad_token_id)
        batch["margin"] = torch.tensor([float(e.get("margin", self.config.margin)) for e in examples])
        return batch

    def batch_units(self, batch) -> int:
        return int(batch["margin"].shape[0])

    def compute_loss(self, model, batch) -> LossOutput:
        chosen, rejected = pair_rewards(model, batch)
        loss = bradley_terry_loss(chosen, rejected, batch["margin"], self.config.center_coefficient)
        stats = {
            "accuracy": float((chosen > rejected).float().sum()),
            "reward_chosen": float(chosen.detach().sum()),
            "reward_rejected": float(rejected.detach().sum()),
        }
        return LossOutput(loss.sum(), stats)

    def save_final(self, model, folder: Path) -> None:
        save_model(model, self.tokenizer, folder, merge_lora=self.config.merge_lora)


def run_rm(config: RMConfig) -> TrainResult:
    run = prepare_finetune(config)
    tokenizer = run.tokenizer
    model = load_reward_model(config.model)
    if config.lora_rank:
        model = add_lora(model, config.lora_rank, config.lora_alpha, task_type="SEQ_CLS")
    train, held_out = run.examples("preference")

    def tokenized(rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            example = tokenize_preference(row, tokenizer, config.max_length)
            if "margin" in row:
                example["margin"] = row["margin"]
            out.append(example)
        return out

    return RewardModelTrainer(config, model, tokenizer, tokenized(train), tokenized(held_out)).train()
