"""Loading and saving models as ordinary Hugging Face directories (safetensors), with optional LoRA."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, load_model
from transformers.utils import logging as hf_logging
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

# Saving a tiny checkpoint every few hundred steps should not print a progress bar each time.
hf_logging.disable_progress_bar()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """`AutoTokenizer` with a pad token guaranteed (GPT-2 and Llama ship none: EOS is reused)."""
    tokenizer = AutoTokenizer.from_pretrained(str(_check_model_dir(path)))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model directory (no config.json); "
            "pass a folder written by save_pretrained or by a tandem command"
        )
    return path


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Any causal LM directory (Llama, Qwen2, GPT-2 families...) from disk; never from a hub."""
    model = AutoModelForCausalLM.from_pretrained(str(_check_model_dir(path)), dtype=dtype)
    if model.config.pad_token_id is None and model.config.eos_token_id is not None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal-LM backbone with a scalar head (`AutoModelForSequenceClassification`, num_labels=1).

    From a causal-LM directory the head is freshly initialised; from a reward-model directory it is loaded.
    """
    path = _check_model_dir(path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a fresh head is expected here, not worth transformers' load report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.pad_token_id is None and model.config.eos_token_id is not None:
        eos = model.config.eos_token_id
        model.config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    return model


def add_lora(model: PreTrainedModel, rank: int, alpha: float, dropout: float = 0.0, task_type: str = "CAUSAL_LM"):
    """Wrap `model` with LoRA adapters on every linear layer of the transformer blocks (peft)."""
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type=task_type
    )
    return get_peft_model(model, config)


def save_model(model, tokenizer: PreTrainedTokenizerBase | None, folder: Path, merge_lora: bool = False) -> None:
    """Write a Hugging Face directory; a LoRA model writes its adapter, or the merged model on request."""
    if isinstance(model, PeftModel) and merge_lora:
        model = model.merge_and_unload()
    model.save_pretrained(str(folder), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def load_weights(model, folder: Path) -> None:
    """Load the weights a checkpoint folder holds back into an existing model (exact resume)."""
    if hasattr(model, "load_checkpoint"):  # wrappers that know their own files (policy + value head)
        model.load_checkpoint(folder)
        return
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
        return
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match the model: missing {missing}, unexpected {unexpected}")
