"""`tandem rm`: a scalar-head reward model trained with the Bradley-Terry loss (Bradley & Terry 1952;
Ouyang et al. 2022, eq. 1): -log sigma(r(x, y_w) - r(x, y_l)).

The model is `AutoModelForSequenceClassification` with one label on the causal-LM backbone, the same
layout TRL and OpenRLHF use, so plain transformers loads the result; the reward of a sequence is the
head's output at its last real token (the last that is not the pad token, as transformers pools it).

By default a micro-batch runs as one packed row (`tandem.generation.packed`): each pair's prompt once, then its
chosen and its rejected answer, each attending to the prompt and to itself, no padding computed. `--no-padding-free`
runs the padded batch of 2B rows instead (the same rewards to floating-point rounding).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from tandem.algorithms.losses import bradley_terry_loss
from tandem.data import pad_preference_batch, tokenize_preference
from tandem.generation.packed import pack_groups, packable, packed_attention
from tandem.generation.prefix import innermost
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
    padding_free: bool = Field(
        True, description="Pack each micro-batch into one row: a pair's prompt computed once, no padding computed."
    )

    pretrained_defaults = {"lr": 1e-5}


def pair_rewards(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of a batch's chosen and rejected sequences, one forward pass: of a packed batch (`pack_pairs`), or
    of a padded one (`pad_preference_batch`: the chosen rows first, then the rejected)."""
    if "block_columns" in batch:
        return packed_pair_rewards(model, batch)
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    rewards = rewards.squeeze(-1).float()
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


def reward_length(tokens: list[int], pad_id: int | None) -> int:
    """Tokens up to the one whose head output is the reward: the last that is not `pad_id` (the first when all are),
    where transformers' sequence classifiers pool; the tokens after it cannot change it (causal attention)."""
    if pad_id is None:
        return len(tokens)
    return next((k + 1 for k in range(len(tokens) - 1, -1, -1) if tokens[k] != pad_id), 1)


def pack_pairs(examples: list[dict], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Pairs as one packed row (`pack_groups`): each pair's chosen sequence, then what its rejected one does not
    share with it (the prompt is shared), each cut after its reward token. `last_columns`: the chosen sequences'
    reward columns, then the rejected ones'."""
    groups = []
    for example in examples:
        chosen, rejected = (example["prompt_ids"] + example[k] for k in ("chosen_ids", "rejected_ids"))
        groups.append([chosen[: reward_length(chosen, pad_id)], rejected[: reward_length(rejected, pad_id)]])
    batch = pack_groups(groups)
    batch["last_columns"] = batch["last_columns"].view(-1, 2).t().flatten()
    batch["n_real_tokens"] = torch.tensor(sum(2 * len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"])
                                              for e in examples))
    return batch


def packed_pair_rewards(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of a packed batch: the score head's output at each sequence's reward column. The model pools one
    output for the whole row; the head's output at every column is taken as it is computed (a forward hook), so the
    forward runs through every wrapper (DDP, PEFT, accelerate's autocast) as it is."""
    head_outputs = []
    hook = innermost(model).score.register_forward_hook(lambda module, args, output: head_outputs.append(output))
    try:
        with packed_attention(model):
            model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                  packed_blocks=(batch["block_columns"], batch["column_slots"]), use_cache=False)
    finally:
        hook.remove()
    rewards = head_outputs[0][0, batch["last_columns"], 0].float()
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


class RewardModelTrainer(Trainer):
    name = "rm"

    def __init__(self, config: RMConfig, model, tokenizer, train_data, eval_data=(), callbacks=()):
        super().__init__(config, model, tokenizer, train_data, eval_data, callbacks)
        self.packs = config.padding_free and packable(self.forward_model) and hasattr(innermost(model), "score")

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.packs:
            batch = pack_pairs(examples, self.model_config.get_text_config().pad_token_id)
        else:
            batch = pad_preference_batch(examples, self.tokenizer.pad_token_id)
        batch["margin"] = torch.tensor([float(e.get("margin", self.config.margin)) for e in examples])
        return batch

    def batch_units(self, batch) -> int:
        return int(batch["margin"].shape[0])

    def batch_tokens(self, batch) -> int:
        if "n_real_tokens" in batch:
            return int(batch["n_real_tokens"])
        return super().batch_tokens(batch)

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
