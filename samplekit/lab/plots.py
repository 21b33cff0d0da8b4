"""Pictures of a comparison and of a replay (matplotlib, the ``plot`` extra).

matplotlib is imported when a picture is drawn, never at import time, and only through its
object API (``Figure`` and the Agg canvas): no pyplot, no global backend switched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from samplekit.lab.compare import MEASURES, Comparison
from samplekit.lab.errors import LabError, require
from samplekit.lab.replay import ReplayRow

HUMAN_COLOR, CHAIN_COLOR, MODEL_COLOR = "#444444", "#3b75af", "#c44e52"


def require_matplotlib() -> None:
    """Raise MissingExtraError (naming the ``plot`` extra) when matplotlib is missing."""
    require("matplotlib", "plot", "--plot")


def new_figure(width: float, height: float):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_comparison(result: Comparison, path: str | Path) -> Path:
    """One bar chart per measure, a bar per chain (the human row in grey), each bar labelled with
    its value ("n/a" where the measure does not apply, so a zero bar never reads as missing)."""
    return save_figure(comparison_figure(result), path)


def comparison_figure(result: Comparison):
    """The figure ``plot_comparison`` saves."""
    figure = new_figure(12, 9)
    names = [row.name for row in result.rows]
    colors = [HUMAN_COLOR if name == "human" else CHAIN_COLOR for name in names]
    axes = figure.subplots(3, 3).flat
    for ax, (key, title, _) in zip(axes, MEASURES):
        scale = 100.0 if key == "repetition" else 1.0  # shown in percent, as in the table
        values = [row.values[key] * scale for row in result.rows]
        bars = ax.bar(names, [0.0 if math.isnan(v) else v for v in values], color=colors,
                      edgecolor=colors, linewidth=1.5)  # the outline keeps a zero-height bar visible
        ax.bar_label(bars, labels=["n/a" if math.isnan(v) else f"{v:.3g}" for v in values], fontsize="small",
                     padding=2)
        ax.margins(y=0.15)  # room for the labels
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=30)
    s = result.settings
    figure.suptitle(f"{s['samples']} samples of up to {s['length']} tokens, prompts from {s['prompts']}")
    return figure


def plot_tradeoff(rows: Sequence[ReplayRow], path: str | Path) -> Path:
    """Coverage of the human's token against mean support size, a point per chain."""
    figure = new_figure(7, 5)
    ax = figure.subplots()
    for row in rows:
        color = MODEL_COLOR if row.name == "model" else CHAIN_COLOR
        ax.scatter([row.support], [row.coverage], color=color)
        ax.annotate(row.name, (row.support, row.coverage), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.set_xlim(0.5, max(row.support for row in rows) * 3)
    ax.set_xlabel("mean support size (tokens that can be drawn)")
    ax.set_ylabel("coverage (share of human tokens kept)")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{rows[0].positions} recorded positions")
    return save_figure(figure, path)


def save_figure(figure, path: str | Path) -> Path:
    """Write the PNG atomically: a failed write (a full disk) leaves an existing picture whole."""
    from samplekit.safe_io import atomic_write

    path = Path(path)
    try:
        with atomic_write(path) as handle:
            figure.savefig(handle, format="png")
    except OSError as exc:
        raise LabError(f"--plot {path}: cannot write the picture ({exc.strerror or exc})") from None
    return path
