"""Files every part of tandem writes: atomically (a reader sees the old content or the new, never a part),
as JSON and JSON lines. The bottom layer: it imports nothing from tandem."""

from __future__ import annotations

import json
import os
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
    """`value` as indented JSON, atomically."""
    atomic_write_text(Path(path), json.dumps(value, indent=2) + "\n")


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    """One JSON object a line, atomically."""
    atomic_write_text(Path(path), "".join(json.dumps(record) + "\n" for record in records))
