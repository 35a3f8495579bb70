"""Atomic checkpoints: Hugging Face model files plus optimizer, scheduler, RNG and step.

A checkpoint is written into a hidden temporary folder and renamed into place, then a `latest` file
naming it is replaced atomically, so a crash (even SIGKILL) mid-save never leaves a corrupt "latest".
Optimizer state is loaded with `torch.load(weights_only=True)`: tensors and plain containers only,
never arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from tandem.files import atomic_write_text, fsync_dir as _fsync_dir, write_failure  # noqa: F401 (re-exported)

LATEST = "latest"


def atomic_directory(final: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)` then move the finished folder to `final` (replacing an older one)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        for file in tmp.iterdir():
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
    except Exception as error:  # a full or read-only disk: the half-written folder goes, the old one stays
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(error, final)
        if failure is None:
            raise
        raise failure from error
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(folder: Path, step: int, optimizer, scheduler, extra: dict | None = None) -> None:
    """Everything besides the weights that a resumed run needs to continue exactly (optimizer None: it is sharded,
    saved with the weights)."""
    if optimizer is not None:
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    torch.save(rng_state(), folder / "rng.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=2))


def load_training_state(folder: Path, optimizer, scheduler) -> dict:
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
    return json.loads((folder / "trainer_state.json").read_text())


def checkpoints_newest_first(checkpoint_dir: Path) -> list[Path]:
    """Every finished checkpoint folder (it has its trainer state), newest step first."""
    found = [p for p in checkpoint_dir.glob("step-*") if p.is_dir() and (p / "trainer_state.json").is_file()]
    return sorted(found, reverse=True)


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint named by `latest`; if that pointer is missing or names no folder, the newest finished
    checkpoint there is (a run is never silently restarted from step 0 over its own checkpoints); else None."""
    pointer = checkpoint_dir / LATEST
    if pointer.exists():
        folder = checkpoint_dir / pointer.read_text().strip()
        if folder.is_dir():
            return folder
    found = checkpoints_newest_first(checkpoint_dir)
    return found[0] if found else None


def mark_latest(checkpoint_dir: Path, folder: Path, keep: int) -> None:
    """Point `latest` at `folder` and delete all but the `keep` newest checkpoints."""
    atomic_write_text(checkpoint_dir / LATEST, folder.name)
    steps = sorted(p for p in checkpoint_dir.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
