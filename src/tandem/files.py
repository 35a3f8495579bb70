"""Files every part of tandem writes: atomically (a reader sees the old content or the new, never a part),
as JSON, JSON lines and reports. The bottom layer: it imports nothing from tandem."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old or the new content, never a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON, atomically (values JSON has no type for, such as paths, as their text)."""
    atomic_write_text(Path(path), json.dumps(value, indent=2, default=str) + "\n")


def write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    """One JSON object a line, atomically (parent folders created); returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))
    return path


def write_report(out: Path, report: dict, markdown: str) -> None:
    """A run's `report.json` (everything, for programs) and `report.md` (what a person reads), atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown)


class WriteError(OSError):
    """Something tandem had to write could not be written: the disk is full or read-only, or a path is not a folder."""


def check_writable_dir(path: Path | str, option: str = "--out", allow_current: bool = False) -> Path:
    """Make sure a run can write under `path` before any work starts (it is created); a clear WriteError if not.

    A run directory may not be the current directory (`--out ''` would scatter a run's files there)
    unless `allow_current` (the folder of an output file).
    """
    path = Path(path)
    if str(path) in ("", ".") and not allow_current:
        raise WriteError(f"{option} names the current directory: give a run directory such as runs/NAME")
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise WriteError(f"{option} {path}: {parent} is a file, not a directory")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".tandem-write-test-"):
            pass
    except OSError as error:
        raise WriteError(f"{option} {path}: cannot write there: {error.strerror or error}") from None
    return path


def write_failure(error: BaseException, target: Path) -> WriteError | None:
    """A WriteError saying why writing `target` failed, if the cause is the file system (full, read-only, ...); else None.

    torch's checkpoint writer reports a full disk as a RuntimeError ("unexpected pos ..."), so a failure
    while little space is left counts as a full disk whatever its type.
    """
    existing = next((p for p in (Path(target), *Path(target).parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or free < (1 << 20):
        reason = f"no space left on the device ({free:,} bytes free)"
    elif code == errno.EROFS:
        reason = "the file system is read-only"
    elif isinstance(error, OSError):
        reason = error.strerror or str(error).splitlines()[0]
    else:
        return None
    return WriteError(f"could not write {target}: {reason}")
