"""Files every part of tandem writes: atomically (a reader sees the old content or the new, never a part),
as JSON, JSON lines and reports. The bottom layer: it imports nothing from tandem."""

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
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", markdown)
