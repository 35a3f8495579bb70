"""What the agents' runs share to write their results: JSON reports and a headless pyplot."""

from __future__ import annotations

import json
from pathlib import Path

from tandem.files import atomic_write_text


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (runs write PNGs, never open windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_json(path: Path, payload: dict) -> None:
    """`payload` as indented JSON, atomically; numpy scalars are written as floats."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")
