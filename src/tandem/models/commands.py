"""`tandem convert`: any model tandem can load (a .gguf file, a LoRA adapter folder, a sharded FSDP checkpoint) as a
plain Hugging Face directory."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ConvertConfig(BaseModel):
    """Options of `tandem convert`."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Path = Field(description="What to convert: a .gguf file, a LoRA adapter folder (merged into its base), a sharded (FSDP) checkpoint folder or a model directory.")
    out: Path = Field(description="New Hugging Face directory to write (must not exist, or be empty).")


def run_convert(config: ConvertConfig) -> Path:
    """Write `config.model` as an ordinary directory (safetensors, tokenizer, generation config) at `config.out`."""
    from tandem.models.gguf import convert_gguf, is_gguf_file

    if is_gguf_file(config.model):
        return convert_gguf(config.model, config.out)
    from tandem.models.loading import load_causal_lm, load_tokenizer, save_model
    from tandem.models.sharded import SHARDED, export_checkpoint

    out = Path(config.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or remove it")
    if (Path(config.model) / SHARDED).is_dir():  # one process, no process group: the shards are gathered here
        return export_checkpoint(config.model, out)
    model, tokenizer = load_causal_lm(config.model), load_tokenizer(config.model)
    save_model(model, tokenizer, out)
    return out


def _run(config: ConvertConfig) -> None:
    import typer

    typer.echo(f"model written to {run_convert(config)}")


def register(add_command) -> None:
    add_command(
        "convert", ConvertConfig, _run,
        "Write a .gguf file, a LoRA adapter merged into its base, or a sharded FSDP checkpoint as a plain Hugging Face model directory.",
    )
