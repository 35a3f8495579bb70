"""Sharded (FSDP) checkpoints as ordinary Hugging Face directories.

A sharded checkpoint (written by the training loop under FSDP, see `tandem.trainers.distributed`) holds
`sharded/model` and `sharded/optimizer`, torch.distributed.checkpoint folders with one shard per process,
beside the model's config.json and tokenizer. `export_checkpoint` gathers the weights in one process,
without a process group, and writes them as the model's own class saves itself (safetensors).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

SHARDED = "sharded"  # the folder of a sharded checkpoint holding the distributed-checkpoint shards


def write_model_directory(model_class: type, config, state_dict: dict[str, torch.Tensor], tokenizer, folder: Path) -> None:
    """An ordinary HF directory (safetensors) from full weights: the model is built without memory (meta device),
    given the tensors, and saved by transformers itself (tied weights, config, generation config)."""
    with torch.device("meta"):  # the plain constructor: `_from_config` would enter ZeRO-3's collective init
        model = model_class(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    tied = set(getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]  # a tied copy is the tensor it is tied to
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit {model_class.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    model.save_pretrained(str(folder), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """One process, no process group: a sharded checkpoint folder -> an ordinary HF model directory at `out`."""
    import transformers
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint = Path(checkpoint)
    if not (checkpoint / SHARDED / "model").is_dir():
        raise FileNotFoundError(f"{checkpoint} holds no sharded weights ({SHARDED}/model): it is not a sharded checkpoint")
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    model_class = getattr(transformers, (config.architectures or ["AutoModelForCausalLM"])[0])
    with tempfile.TemporaryDirectory() as scratch:
        gathered = Path(scratch) / "model.pt"
        dcp_to_torch_save(str(checkpoint / SHARDED / "model"), str(gathered))
        state_dict = torch.load(gathered, weights_only=True)
    tokenizer = None
    if (checkpoint / "tokenizer_config.json").exists():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_model_directory(model_class, config, state_dict, tokenizer, out)
    return out

