"""``samplekit processors``: every registered processor, its parameters and who provides it."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer


def processors(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every processor: stage, parameters (type, default, allowed), plugin and version."""
    from samplekit.plugins import get_registry

    entries = [entry.describe() for entry in get_registry()]
    if as_json:
        typer.echo(json.dumps(entries, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="samplekit processors", show_lines=True)
    for column in ("name", "stage", "parameters", "description", "provided by"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "plugin"))
    for e in entries:
        name = e["name"] + (f"\n({', '.join(e['aliases'])})" if e["aliases"] else "")
        params = "\n".join(_param_line(p, primary=p["name"] == e["primary"] and len(e["params"]) > 1)
                           for p in e["params"]) or "-"
        who = e["plugin"] + (f"\n{e['distribution']} {e['version'] or ''}".rstrip() if e["distribution"] else "")
        table.add_row(*(Text(c) for c in (name, e["stage"], params, e["summary"], who)))
    Console(width=None if sys.stdout.isatty() else 120).print(table)


def _param_line(p: dict, primary: bool = False) -> str:
    default = "required" if p["required"] else f"default {p['default']!r}"
    return f"{p['name']}{' (primary)' if primary else ''}: {p['allowed']}, {default}"
