"""How the agents' runs write their JSON reports (their plots use `tandem.plotting.headless_pyplot`)."""

from __future__ import annotations

import json
from pathlib import Path

from tandem.files import atomic_write_text


def write_json(path: Path, payload: dict) -> None:
    """`payload` as indented JSON, atomically; numpy scalars are written as floats."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")
