"""Plots without a display: matplotlib's file-only backend, chosen once before pyplot loads.

The bottom layer: it imports nothing from tandem. matplotlib is imported on first use, so commands
that draw nothing do not pay for it.
"""

from __future__ import annotations


def headless_pyplot():
    """`matplotlib.pyplot` on the Agg backend (PNG files, no window, works over SSH and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
