"""Training curves as PNG plots for Dagster metadata (matplotlib, headless); the PNG helpers are in
:mod:`.figures`."""

from __future__ import annotations

from typing import Iterable

from sr_pipeline.sr.images.figures import figure_png


def curves_png(history: list[dict], keys: Iterable[str], title: str, logy: bool = True) -> bytes:
    """Plot ``history`` rows (each with a ``step``) for the given keys; returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for key in keys:
        pts = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), label=key)
    if logy and any(r.get(k, 0) and r[k] > 0 for r in history for k in keys):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig)
