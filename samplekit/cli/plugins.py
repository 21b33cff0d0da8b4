"""``samplekit plugins``: installed plugins, their versions, and what each registers."""

from __future__ import annotations

import dataclasses
import json
import sys
import os
from typing import Annotated

import typer


def plugins(
    show_all: Annotated[bool, typer.Option("--all", help="Include samplekit's built-in plugins.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List installed plugins: distribution, version, processors and hooks; load failures too."""
    from samplekit.plugins import AUTOLOAD_ENV, default_host

    host = default_host()
    infos = host.plugin_infos(include_builtins=show_all)
    rows = [dataclasses.asdict(i) for i in infos]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if os.environ.get(AUTOLOAD_ENV):
        typer.echo(f"plugin autoload is off ({AUTOLOAD_ENV} is set): only built-ins are loaded", err=True)
    if not rows:
        typer.echo("no plugins installed (`samplekit plugins --all` shows the built-ins)")
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="samplekit plugins", show_lines=True)
    for column in ("plugin", "distribution", "processors", "hooks", "status"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "plugin"))
    for r in rows:
        dist = f"{r['distribution'] or '-'} {r['version'] or ''}".rstrip()
        if r["builtin"]:
            dist += "\n(built-in)"
        status = Text(r["error"], style="red") if r["error"] else Text("ok")
        cells = (r["name"], dist, ", ".join(r["processors"]) or "-", ", ".join(r["hooks"]) or "-")
        table.add_row(*(Text(c) for c in cells), status)
    Console(width=None if sys.stdout.isatty() else 120).print(table)
