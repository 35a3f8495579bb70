"""GGUF files (llama.cpp's format) in: converted once to an ordinary Hugging Face directory.

transformers reads a GGUF file and de-quantises it to fp32, but refuses to `save_pretrained` the result
and takes ~15 s per load for a 135M model. Converting once to safetensors (model, tokenizer with its chat
template, generation config) makes every later load a plain directory load; by default the directory is
cached under a key of the file's content, so the same file is converted only once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

GGUF_CACHE_ENV = "TANDEM_CACHE"


def is_gguf_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".gguf" and Path(path).is_file()


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """First 16 hex characters of the file's sha256: the cache key (a renamed or copied file still hits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


def gguf_cache_dir(path: str | Path) -> Path:
    """Where the conversion of `path` is cached: $TANDEM_CACHE/gguf/KEY, else ~/.cache/tandem/gguf/KEY."""
    root = Path(os.environ[GGUF_CACHE_ENV]) if os.environ.get(GGUF_CACHE_ENV) else Path.home() / ".cache" / "tandem"
    return root.expanduser() / "gguf" / file_digest(Path(path))


def convert_gguf(path: str | Path, out: str | Path | None = None) -> Path:
    """Write `path` (a .gguf file) as a Hugging Face directory and return it.

    With `out=None` the directory is the cache entry of the file (`gguf_cache_dir`), reused when it
    exists; an explicit `out` must not exist yet. Written to a temporary sibling and renamed, so an
    interrupted conversion never leaves a half directory that looks finished.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    if path.suffix.lower() != ".gguf":
        raise ValueError(f"{path} is not a .gguf file")
    cached = out is None
    out = gguf_cache_dir(path) if cached else Path(out).expanduser()
    if cached and (out / "config.json").is_file():
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_hf_dir(path, scratch)
        if out.exists():
            out.rmdir()  # empty (checked above); rename needs the name free
        os.rename(scratch, out)
    except OSError:
        if cached and (out / "config.json").is_file():  # another process converted the same file meanwhile
            return out
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _write_hf_dir(path: Path, folder: Path) -> None:
    """Load the GGUF with transformers, then save a fresh copy of the model (the loaded one refuses to save)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loader reports every metadata key it does not map
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = loaded.config
    # the weights are de-quantised now: a quantization entry left in config.json would make transformers treat
    # the directory as GGUF-quantised again and refuse to save any model trained from it
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config = generation_config(GenerationConfig.from_model_config(model.config), tokenizer)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def generation_config(config, tokenizer):
    """`config` with the tokenizer's EOS among its stop tokens and a pad token set.

    GGUF metadata names one EOS; a chat model also ends its turn with the tokenizer's EOS (`<|im_end|>`),
    and generation without a pad token warns on every call.
    """
    eos = config.eos_token_id
    eos = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    config.eos_token_id = eos[0] if len(eos) == 1 else eos or None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config
