"""Loading and saving models as ordinary Hugging Face directories (safetensors), with optional LoRA."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
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

from tandem.models.attention import use_grouped_attention

# Saving a tiny checkpoint every few hundred steps should not print a progress bar each time.
hf_logging.disable_progress_bar()


ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class ModelSource:
    """What a model path names, resolved to folders on disk.

    `path`: what the caller passed, absolute (a LoRA adapter trained on this model records it as its base).
    `folder`: the Hugging Face directory to load (a converted GGUF's cache), or the adapter folder.
    `base`: for an adapter, the source of the model it adapts; None otherwise.
    """

    path: Path
    folder: Path
    base: ModelSource | None = None

    @property
    def tokenizer_folder(self) -> Path:
        """An adapter folder's own tokenizer when it saved one (tandem does), else its base's."""
        if self.base is None or (self.folder / "tokenizer_config.json").is_file():
            return self.folder
        return self.base.tokenizer_folder


def resolve_model(path: str | Path) -> ModelSource:
    """Resolve a model path: a Hugging Face directory, a .gguf file (converted once, cached) or a LoRA adapter folder.

    An adapter's base (`base_model_name_or_path` in its adapter_config.json) is resolved the same way, so it
    may be a directory, a GGUF file or another adapter. Tandem never downloads: a base that is not on disk
    is an error naming the adapter config to edit.
    """
    from tandem.models.gguf import convert_gguf, is_gguf_file

    path = Path(path).expanduser()
    if (path / "config.json").is_file():
        return ModelSource(path.absolute(), path)
    if is_gguf_file(path):
        return ModelSource(path.absolute(), convert_gguf(path))
    if (path / ADAPTER_CONFIG).is_file():
        return ModelSource(path.absolute(), path, resolve_model(adapter_base_path(path)))
    if path.is_file():
        raise FileNotFoundError(f"{path} is not a model: pass a .gguf file or a model directory")
    raise FileNotFoundError(
        f"{path} is not a Hugging Face model directory (no config.json), a LoRA adapter folder "
        "(no adapter_config.json) nor a .gguf file; pass a folder written by save_pretrained or by a tandem command"
    )


def adapter_base_path(adapter: Path) -> Path:
    """The local base model of a LoRA adapter folder.

    A relative base is looked up next to the adapter folder first (a run directory moved as a whole), then
    from the working directory (how peft records the path it was given).
    """
    config_file = adapter / ADAPTER_CONFIG
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{config_file}: not a readable adapter config ({error})") from None
    if not base:
        raise FileNotFoundError(f"{config_file} names no base model (base_model_name_or_path)")
    base = Path(base).expanduser()
    candidates = [base] if base.is_absolute() else [adapter.absolute().parent / base, base]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"base model {str(base)!r} of the adapter {adapter} is not on this machine (tandem never downloads); "
        f"set base_model_name_or_path in {config_file} to a local model directory or .gguf file"
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """`AutoTokenizer` with a pad token guaranteed (GPT-2 and Llama ship none: EOS is reused)."""
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(path).tokenizer_folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def process_device() -> torch.device:
    """The device this process trains on, known before its Accelerator exists (accelerate's choice: the local rank's
    GPU, else the CPU): where the models beside the policy (reward model, judge, pair sampler) run."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32, merge: bool = True):
    """Any causal LM (Llama, Qwen2, GPT-2 families...) from disk, never from a hub; see `resolve_model`.

    A LoRA adapter comes merged into its base (a plain model), or with `merge=False` as a `PeftModel`
    whose adapters train on.
    """
    return _load(resolve_model(path), AutoModelForCausalLM, merge, dtype=dtype)


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal-LM backbone with a scalar head (`AutoModelForSequenceClassification`, num_labels=1).

    From a causal-LM directory the head is freshly initialised; from a reward-model directory (or a
    reward model's LoRA adapter, merged) it is loaded.
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a fresh head is expected here, not worth transformers' load report
    try:
        return _load(resolve_model(path), AutoModelForSequenceClassification, True, num_labels=1, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)


def _load(source: ModelSource, auto_class, merge: bool, **options):
    """`auto_class` from a resolved source; an adapter is loaded onto its (recursively loaded, merged) base."""
    if source.base is None:
        model = auto_class.from_pretrained(str(source.folder), **options)
    else:
        base = _load(source.base, auto_class, True, **options)
        model = PeftModel.from_pretrained(base, str(source.folder), is_trainable=not merge)
        if merge:  # peft froze the base for the adapter; merged, it is an ordinary model to train again
            model = model.merge_and_unload().requires_grad_(True)
    _set_pad_token_id(model.config)
    use_grouped_attention(model)
    if not isinstance(model, PeftModel):
        model.name_or_path = str(source.path)  # what a LoRA saved on top records as its base
    return model


def _set_pad_token_id(config) -> None:
    if config.pad_token_id is None and config.eos_token_id is not None:
        eos = config.eos_token_id
        config.pad_token_id = eos[0] if isinstance(eos, list) else eos


def add_lora(model: PreTrainedModel, rank: int, alpha: float, dropout: float = 0.0, task_type: str = "CAUSAL_LM"):
    """Wrap `model` with LoRA adapters on every linear layer of the transformer blocks (peft)."""
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type=task_type
    )
    return get_peft_model(model, config)


def lora_model(model) -> PeftModel | None:
    """The `PeftModel` that `model` is or wraps (PPO's value-head wrapper holds it as `.policy`), if any."""
    for candidate in (model, getattr(model, "policy", None)):
        if isinstance(candidate, PeftModel):
            return candidate
    return None


def enable_gradient_checkpointing(model) -> None:
    """Activation checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost") in the
    Hugging Face model inside `model` (under PEFT or a value head): each decoder layer's activations are
    recomputed in the backward. Non-reentrant, so frozen embeddings (LoRA) need no input-gradient hook; only
    in training mode, so generation keeps its KV cache."""
    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing), None)
    if inner is None:
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@contextmanager
def evaluating(model):
    """`model` in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def reference_and_context(policy, reference):
    """(model, context factory) for a reference forward: `reference` as it is, or when there is none and
    `policy` has LoRA adapters, the policy with its adapters disabled: the base model, without a second copy.
    """
    adapted = lora_model(policy)
    if reference is None and adapted is not None:
        return adapted, adapted.disable_adapter
    return reference, nullcontext


def save_model(model, tokenizer: PreTrainedTokenizerBase | None, folder: Path, merge_lora: bool = False) -> None:
    """Write a Hugging Face directory; a LoRA model writes its adapter, or the merged model on request.

    An adapter records its base as an absolute path, so the folder loads from any working directory.
    """
    if isinstance(model, PeftModel) and merge_lora:
        model = model.merge_and_unload()
    adapted = lora_model(model)
    if adapted is not None:
        for config in adapted.peft_config.values():
            base = config.base_model_name_or_path
            if base and Path(base).expanduser().exists():
                config.base_model_name_or_path = str(Path(base).expanduser().resolve())
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
