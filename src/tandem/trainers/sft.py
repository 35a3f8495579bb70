"""`tandem sft`: supervised fine-tuning on demonstrations: the next-token NLL -sum_t log p_theta(y_t | x, y_<t) on
completion tokens only (e.g. Ouyang et al. 2022, sec. 3.5)."""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, Field, field_validator

from tandem.algorithms.losses import IGNORE_INDEX, sft_nll_sum
from tandem.config import InputPath, TrainConfig
from tandem.data import pad_sft_batch, tokenize_sft
from tandem.generation.scoring import completion_logits
from tandem.models.loading import add_lora, load_causal_lm, save_model
from tandem.tasks import check_task_spec
from tandem.trainers.loop import GenerativeTrainer, LossOutput, TrainResult
from tandem.trainers.sources import prepare_finetune


class LoRAOptions(BaseModel):
    """Adapter options of every command that fine-tunes a model (SFT, RM, DPO, PPO, GRPO)."""

    lora_rank: int = Field(0, ge=0, description="LoRA rank (peft) on all linear layers; 0 trains every weight.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha.")


class FinetuneSourceConfig(TrainConfig, LoRAOptions):
    """Model, data and adapter options shared by fine-tuning commands."""

    task: str = Field("sentiment", description="Built-in task to draw data from when --data is not given.")
    data: InputPath | None = Field(None, description="Your training data: JSONL/JSON/Parquet/CSV file or a saved `datasets` directory.")
    eval_data: InputPath | None = Field(None, description="Held-out data in the same format (default: a slice of --data).")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="Fraction of --data held out when --eval-data is not given.")
    n_train: int = Field(4000, ge=1, description="Training examples to generate from the task.")
    n_eval: int = Field(200, ge=0, description="Held-out examples / prompts to generate from the task.")
    merge_lora: bool = Field(False, description="Save the merged model instead of the adapter.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return check_task_spec(value)


class SFTConfig(FinetuneSourceConfig):
    out: Path = Field(Path("runs/sft"), description="Run directory.")
    model: Path = Field(Path("runs/pretrain/model"), description="Causal LM to fine-tune: a model directory, a .gguf file or a LoRA adapter folder (merged first).")
    padding_free: bool = Field(
        True, description="Pack each micro-batch into one row with per-sequence positions (no padding tokens computed)."
    )
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (used when --max-steps is not set).")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate of AdamW (pretrained models: 2e-5, TRL's default).")

    pretrained_defaults = {"lr": 2e-5}


PACKED_ROW_FLOOR = 512


def padding_free_batch(examples: list[dict], row_length: int, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pack a micro-batch into rows of at most `row_length` tokens, position ids restarting for each sequence.

    Hugging Face models build a block-diagonal causal mask from the position ids when no attention mask
    is given, so each sequence attends only to itself. Rows are capped at the longest sequence of the batch
    (and at `row_length`); without a variable-length attention kernel (flash-attention) the masked attention
    of a row costs O(row^2), so a row no longer than the padded batch's keeps it at or below the padded cost
    while the padding goes. The first token of each sequence gets no label, so nothing is predicted across a
    boundary; the tail of a row is padding, its own segment. Below `PACKED_ROW_FLOOR` tokens attention is a
    small share of the cost, so short sequences still pack together up to that length.
    """
    longest = max(len(example["input_ids"]) for example in examples)
    row_length = min(row_length, max(longest, PACKED_ROW_FLOOR))
    rows: list[tuple[list[int], list[int], list[int]]] = []
    for example in examples:
        tokens, mask = example["input_ids"], example["completion_mask"]
        if not rows or len(rows[-1][0]) + len(tokens) > row_length:
            rows.append(([], [], []))
        ids, labels, positions = rows[-1]
        labels.extend(t if m else IGNORE_INDEX for t, m in zip(tokens, mask))
        labels[len(ids)] = IGNORE_INDEX
        ids.extend(tokens)
        positions.extend(range(len(tokens)))
    width = max(len(ids) for ids, _, _ in rows)
    for ids, labels, positions in rows:
        missing = width - len(ids)
        ids.extend([pad_id] * missing)
        labels.extend([IGNORE_INDEX] * missing)
        positions.extend(range(missing))
    return {
        "input_ids": torch.tensor([r[0] for r in rows]),
        "labels": torch.tensor([r[1] for r in rows]),
        "position_ids": torch.tensor([r[2] for r in rows]),
        "n_real_tokens": torch.tensor(sum(len(e["input_ids"]) for e in examples)),
    }


class SFTTrainer(GenerativeTrainer):
    name = "sft"

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if self.config.padding_free:
            return padding_free_batch(examples, self.config.max_length, self.tokenizer.pad_token_id)
        return pad_sft_batch(examples, self.tokenizer.pad_token_id)

    def batch_units(self, batch) -> int:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def batch_tokens(self, batch) -> int:
        if "n_real_tokens" in batch:
            return int(batch["n_real_tokens"])
        return super().batch_tokens(batch)

    def compute_loss(self, model, batch) -> LossOutput:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        logits = completion_logits(model, batch["labels"], **inputs)  # the head only where labels are
        loss_sum, _ = sft_nll_sum(logits, batch["labels"])
        return LossOutput(loss_sum)

    def save_final(self, model, folder: Path) -> None:
        save_model(model, self.tokenizer, folder, merge_lora=self.config.merge_lora)


def n_cut(rows: list[dict], ids: list[dict], tokenizer, max_length: int | None) -> int:
    """How many of `rows` `tokenize_sft` cut to `max_length` (`ids`: its output for them): only a row that fills
    the length exactly can have been cut, and only those are tokenized again, uncut."""
    if max_length is None:
        return 0
    return sum(len(x["input_ids"]) == max_length and len(tokenize_sft(r, tokenizer)["input_ids"]) > max_length
               for r, x in zip(rows, ids))


def run_sft(config: SFTConfig) -> TrainResult:
    run = prepare_finetune(config)
    model = load_causal_lm(config.model)
    if config.lora_rank:
        model = add_lora(model, config.lora_rank, config.lora_alpha)
    train, held_out = run.examples("sft")
    train_ids = [tokenize_sft(r, run.tokenizer, config.max_length) for r in train]
    eval_ids = [tokenize_sft(r, run.tokenizer, config.max_length) for r in held_out]
    for name, rows, ids in (("training", train, train_ids), ("held-out", held_out, eval_ids)):
        if cut := n_cut(rows, ids, run.tokenizer, config.max_length):
            print(f"[tandem] {cut} of {len(rows)} {name} completions cut to fit --max-length {config.max_length}: "
                  "their ends are not trained on or scored (raise --max-length to keep them)", flush=True)
    return SFTTrainer(config, model, run.tokenizer, train_ids, eval_ids, **run.evaluation()).train()


def pretrain_then_sft(out: Path, stages: dict[str, dict], reuse: bool = True, **common) -> tuple[Path, Path]:
    """A tiny model pre-trained on the task's corpus (`stages["pretrain"]`'s options), then fine-tuned on its
    demonstrations (`stages["sft"]`), in OUT/pretrain and OUT/sft; with `reuse`, a stage already finished there is
    kept. `common` (task, seed, progress, mixed_precision) goes to both. Returns the two model directories."""
    from tandem.trainers.pretrain import PretrainConfig, run_pretrain

    pretrained, sft = Path(out) / "pretrain" / "model", Path(out) / "sft" / "model"
    if not (reuse and (pretrained / "config.json").is_file()):
        pretrained = run_pretrain(PretrainConfig(out=Path(out) / "pretrain", **common, **stages["pretrain"])).model_dir
    if not (reuse and (sft / "config.json").is_file()):
        sft = run_sft(SFTConfig(out=Path(out) / "sft", model=pretrained, **common, **stages["sft"])).model_dir
    return pretrained, sft
