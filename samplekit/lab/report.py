"""Tables (rich) and JSON for comparisons and replays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

from rich.table import Table

from samplekit.lab.compare import MEASURES, Comparison
from samplekit.lab.replay import ReplayRow

REPLAY_COLUMNS = (
    ("coverage", "coverage", "{:.2%}"),
    ("support", "mean support", "{:.1f}"),
    ("entropy", "entropy (nats)", "{:.3f}"),
    ("human_prob", "p(human token)", "{:.4f}"),
    ("seconds", "s", "{:.2f}"),
)


def _cell(value, fmt: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def comparison_table(result: Comparison) -> Table:
    s = result.settings
    table = Table(title=f"{s['samples']} samples of up to {s['length']} tokens, prompts from "
                        f"{s['prompts']}, seed {s['seed']}")
    table.add_column("chain")
    for _, title, _ in MEASURES:
        table.add_column(title, justify="right")
    for row in result.rows:
        table.add_row(row.name, *(_cell(row.values[key], fmt) for key, _, fmt in MEASURES))
    return table


def replay_table(rows: Sequence[ReplayRow], meta: dict) -> Table:
    table = Table(title=f"{rows[0].positions} recorded positions (top {meta.get('top_n')} of "
                        f"{meta.get('vocab_size')} logits), {meta.get('source', 'a record')}")
    table.add_column("chain")
    for _, title, _ in REPLAY_COLUMNS:
        table.add_column(title, justify="right")
    for row in rows:
        table.add_row(row.name, *(_cell(getattr(row, key), fmt) for key, _, fmt in REPLAY_COLUMNS))
    return table


def comparison_json(result: Comparison) -> dict:
    return {"settings": result.settings, "timings": result.timings,
            "rows": [{"name": r.name, **{k: _plain(v) for k, v in r.values.items()}} for r in result.rows]}


def replay_json(rows: Sequence[ReplayRow], meta: dict) -> dict:
    keys = ("source", "checkpoint", "top_n", "vocab_size", "context_length")
    return {"record": {k: meta.get(k) for k in keys},
            "rows": [{k: _plain(v) for k, v in asdict(r).items()} for r in rows]}


def _plain(value):
    return None if isinstance(value, float) and math.isnan(value) else value
