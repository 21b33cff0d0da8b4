"""``samplekit config``: validate config files, show a resolved chain, list the presets."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
import yaml

from samplekit.cli.errors import user_message
from samplekit.errors import SampleKitError

app = typer.Typer(help="Validate chain configs, show them resolved, list the presets.",
                  no_args_is_help=True)


@app.command()
def validate(
    files: Annotated[list[str], typer.Argument(metavar="FILE", help="Config files or preset names.")],
    strict: Annotated[bool, typer.Option("--strict", help="Treat lint warnings as errors.")] = False,
) -> None:
    """Check each config: `ok FILE` (with its count of lint warnings, each printed as
    `warning: FILE: ...`, as `generate` prints them), or `error: ...`."""
    from samplekit.config import load_config
    from samplekit.lint import lint_chain

    invalid = warned = 0
    for name in files:
        try:
            cfg = load_config(name)
        except SampleKitError as exc:
            invalid += 1
            typer.echo(f"error: {user_message(str(exc))}", err=True)
            continue
        warnings = lint_chain(cfg)
        for w in warnings:
            typer.echo(f"{'error' if strict else 'warning'}: {name}: {w}", err=True)
        warned += len(warnings)
        if not (strict and warnings):
            typer.echo(f"ok {name}" + (f" ({len(warnings)} warning{'s' * (len(warnings) > 1)})" if warnings else ""))
    if invalid or (strict and warned):
        parts = [f"{invalid} invalid"] if invalid else []
        if strict and warned:
            parts.append(f"{warned} warning(s) under --strict")
        typer.echo(f"{len(files)} checked: " + ", ".join(parts), err=True)
        raise typer.Exit(2)


@app.command()
def show(
    config: Annotated[Optional[str], typer.Argument(
        metavar="[FILE|PRESET]", help="A config file or preset name (default: the built-in default).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="PROC.PARAM=VALUE", help="Override one setting (VALUE is YAML). Repeatable.")] = None,
) -> None:
    """Print the fully resolved config as YAML, every default filled in."""
    from samplekit.overrides import build_config

    cfg = build_config(config, sets=set_ or [])
    typer.echo(yaml.safe_dump(cfg.resolved(), sort_keys=False, allow_unicode=True), nl=False)


@app.command()
def presets(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the bundled presets and their chains."""
    from samplekit.config import load_config, preset_names, preset_path

    rows = []
    for name in preset_names():
        path = preset_path(name)
        cfg = load_config(path)
        chain = cfg.build_chain()
        rows.append({
            "name": name,
            "path": str(path),
            "description": _first_comment(path),
            "chain": " -> ".join(_short(p) for p in chain.processors),
            "max_new_tokens": cfg.run["max_new_tokens"],
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['chain']}")
        if r["description"]:
            typer.echo(f"{'':<{width}}  {r['description']}")


def _short(p) -> str:
    """``name(values)``: the first parameter's value, then the others that differ from their defaults."""
    defaults = {q.name: q.default for q in p.params}
    values = ", ".join(f"{v}" for i, (k, v) in enumerate(p.settings.items())
                       if v is not None and (i == 0 or v != defaults.get(k)))
    return f"{p.name}({values})" if values else p.name


def _first_comment(path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""
