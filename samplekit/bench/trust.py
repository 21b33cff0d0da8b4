"""Whether a benchmark's figures can be trusted, and what to print when they cannot.

Two things make timings untrustworthy: a busy machine (the load average above the usable
cores: other work competes for the CPU) and repeats that disagree (one variant's slowest
repeat far from its fastest, or the paired ratio far from the ratio of the medians, which
then tell different stories). ``doubts`` names them; the report prints each as a note, and
withholds the ratios of a batch whose figures disagree instead of printing numbers that
contradict its table. ``remaining`` turns the warm-up runs into a time estimate.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

SPREAD_LIMIT = 0.25  # (slowest - fastest) / median of one variant's repeats
AGREEMENT_LIMIT = 0.10  # |paired overhead - overhead of the medians|, as a share of the bare loop's time


def machine_load() -> dict[str, float]:
    """The one-minute load average and the usable cores (samplekit.threads), now."""
    from samplekit.threads import load_average, usable_cores

    return {"load": round(load_average(), 2), "cores": usable_cores()}


def busy_note(before: Mapping[str, float], after: Mapping[str, float]) -> str | None:
    """A note when the load average, at the start or the end, was above the usable cores."""
    worst = max(before["load"], after["load"])
    cores = before["cores"]
    if worst <= cores:
        return None
    return (f"the machine was busy (load average up to {worst:.1f} on {cores} core{'s' * (cores > 1)}): "
            "other work competed for the CPU, so these timings are slower and noisier than on an idle "
            "machine; rerun when it is idle (--threads 1 suffers least meanwhile)")


def spread(values: Sequence[float]) -> float:
    """``(slowest - fastest) / median``: 0 when the repeats agree exactly."""
    return (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def batch_doubts(row: Mapping[str, Any]) -> list[str]:
    """Why a batch's figures (one ``run_bench`` row) cannot be trusted; empty when they can."""
    found = []
    for key, value in row.items():
        times = value.get("all_seconds") if isinstance(value, Mapping) else None
        if times and spread(times) > SPREAD_LIMIT:
            found.append(f"the repeats of {key} disagree ({min(times):.3g} to {max(times):.3g} s)")
    paired = row.get("ratios", {}).get("overhead_vs_bare")
    if paired is not None and "samplekit" in row and "bare" in row:
        medians = row["samplekit"]["seconds"] / row["bare"]["seconds"] - 1
        if abs(medians - paired) > AGREEMENT_LIMIT:
            found.append(f"the paired overhead over the bare loop ({paired:+.1%}) and the one of the medians "
                         f"({medians:+.1%}) disagree")
    return found


def remaining(warmups: Mapping[str, float], repeats: int, batch_sizes: Sequence[int], done: int) -> float:
    """Seconds still to run after the warm-ups of ``batch_sizes[done]``: its repeats, then the later
    batches (warm-up and repeats), scaled from this batch by a step's cost, ``1 + (B - 1) / 4``."""
    per_run = sum(warmups.values())
    scale = 1 + (batch_sizes[done] - 1) / 4
    later = sum((1 + (b - 1) / 4) / scale for b in batch_sizes[done + 1:])
    return per_run * (repeats + later * (1 + repeats))


def duration(seconds: float) -> str:
    """``"40 s"``, ``"4 min"``."""
    return f"{max(seconds, 1):.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
