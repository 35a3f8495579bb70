"""`tandem pretrain`: next-token training of a tiny model on a task corpus (the pre-training that the SFT -> RM -> RL
recipe of Ouyang et al. 2022 starts from)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from transformers import set_seed

from tandem.algorithms.losses import sft_nll_sum
from tandem.config import InputPath, TrainConfig
from tandem.data import pack_sequences, tokenize_text
from tandem.models.factory import MODEL_SIZES, build_model
from tandem.models.loading import load_causal_lm, load_tokenizer
from tandem.models.tokenizer import train_tokenizer
from tandem.tasks import check_task_spec, get_task
from tandem.trainers.loop import GenerativeTrainer, LossOutput, TrainResult
from tandem.trainers.sources import train_eval_examples


class PretrainConfig(TrainConfig):
    out: Path = Field(Path("runs/pretrain"), description="Run directory.")
    task: str = Field("sentiment", description="Built-in task whose corpus to train on (when --data is not given).")
    data: InputPath | None = Field(None, description="Your own corpus: JSONL/JSON/Parquet/CSV or a saved dataset with a 'text' field.")
    model: Path | None = Field(None, description="Continue pre-training this Hugging Face model directory instead of a new tiny model.")
    size: Literal["tiny", "small", "medium"] = Field("small", description="Tiny-model preset (~1M, ~5M, ~30M parameters).")
    arch: Literal["llama", "qwen2"] = Field("llama", description="Architecture of the new tiny model.")
    vocab_size: int | None = Field(None, ge=300, description="BPE vocabulary size (default: the preset's).")
    n_documents: int = Field(20_000, ge=1, description="Documents to generate from the task.")
    n_eval: int = Field(200, ge=0, description="Held-out task prompts for the gold-reward evaluation.")
    max_length: int = Field(128, ge=8, description="Block size: the corpus is packed into blocks of this many tokens.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return check_task_spec(value)


class PretrainTrainer(GenerativeTrainer):
    name = "pretrain"

    def collate(self, blocks: list[list[int]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor(blocks, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def batch_units(self, batch) -> int:
        return int(batch["labels"][:, 1:].numel())

    def compute_loss(self, model, batch) -> LossOutput:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        loss_sum, _ = sft_nll_sum(logits, batch["labels"])
        return LossOutput(loss_sum)



def run_pretrain(config: PretrainConfig) -> TrainResult:
    """Build (or load) the model and tokenizer, pack the corpus, and train."""
    set_seed(config.seed)  # new weights (a fresh reward head, LoRA) are initialised reproducibly
    task = get_task(config.task) if config.data is None else None
    if config.model is not None:
        tokenizer, model = load_tokenizer(config.model), load_causal_lm(config.model)
    else:
        tokenizer = None  # trained below on the corpus itself
    n_eval_docs = max(1, config.n_documents // 50)
    raw_train, raw_eval = train_eval_examples(
        "text", data=config.data, eval_data=None, task_name=config.task, n_train=config.n_documents,
        n_eval=n_eval_docs, eval_fraction=0.02, seed=config.seed, tokenizer=tokenizer, max_length=None,
    )
    if tokenizer is None:
        size = MODEL_SIZES[config.size]
        tokenizer = train_tokenizer((r["text"] for r in raw_train), vocab_size=config.vocab_size or size.vocab_size)
        model = build_model(size, tokenizer, arch=config.arch, seed=config.seed)
    train_blocks = pack_sequences([tokenize_text(r, tokenizer)["input_ids"] for r in raw_train], config.max_length)
    eval_blocks = pack_sequences([tokenize_text(r, tokenizer)["input_ids"] for r in raw_eval], config.max_length)
    eval_prompts = task.eval_prompts(config.n_eval, seed=config.seed) if task is not None and config.n_eval else []
    trainer = PretrainTrainer(config, model, tokenizer, train_blocks, eval_blocks, task=task, eval_prompts=eval_prompts)
    return trainer.train()
