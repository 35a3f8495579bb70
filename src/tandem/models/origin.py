"""Where a model comes from decides how it is driven: tandem's own from-scratch models vs pretrained checkpoints.

A model tandem builds (`tandem pretrain`, `models.factory.build_model`) carries `"tandem_origin": "scratch"`
in its config.json, kept through every later save. Such a model was trained on raw task text, so its
prompts stay raw and its hyper-parameters are those of small models trained from scratch. Anything
else (a Hugging Face checkpoint, a GGUF file, a LoRA adapter on one) is "pretrained": string prompts go
through its chat template and the defaults follow what the field uses for fine-tuning (TRL's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from tandem.models.loading import ADAPTER_CONFIG, adapter_base_path

Origin = Literal["scratch", "pretrained"]
ORIGIN_KEY = "tandem_origin"


def mark_scratch(model) -> None:
    """Record in the model's config that tandem built it from scratch."""
    setattr(model.config, ORIGIN_KEY, "scratch")


def model_origin(path: str | Path | None) -> Origin:
    """"scratch" for a directory tandem built (or an adapter on one), else "pretrained"."""
    if path is None:
        return "scratch"  # no model given: the command builds a new tiny one
    path = Path(path)
    if not (path / "config.json").is_file() and (path / ADAPTER_CONFIG).is_file():
        try:
            return model_origin(adapter_base_path(path))  # the base the loader itself resolves
        except FileNotFoundError:
            return "pretrained"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):  # a .gguf file, or no readable config: not one of tandem's
        return "pretrained"
    return "scratch" if config.get(ORIGIN_KEY) == "scratch" else "pretrained"


def use_chat_template(mode: str, tokenizer, origin: Origin) -> bool:
    """Whether string prompts are rendered with the tokenizer's chat template (`--chat-template auto|on|off`).

    auto: on for pretrained models whose tokenizer has a template, off for tandem's from-scratch models
    (their template was never trained). on: always (an error without a template). off: never.
    """
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if mode == "off":
        return False
    if mode == "on":
        if not has_template:
            raise ValueError("--chat-template on, but the tokenizer has no chat template")
        return True
    if mode != "auto":
        raise ValueError(f"--chat-template must be auto, on or off, got {mode!r}")
    return has_template and origin == "pretrained"
