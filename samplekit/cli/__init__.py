"""The ``samplekit`` command line: a thin Typer app over the library.

Every command lives in its own small module; ``errors.GuardedGroup`` is the one error boundary
(a ``SampleKitError`` or a usage error prints one ``error: <message>`` line and exits 2, no
traceback). ``samplekit --version`` prints the version; ``--install-completion`` and
``--show-completion`` set up shell completion (Typer's).
"""

from __future__ import annotations

import importlib.util
from typing import Annotated

import typer

from samplekit.cli import config, generate, info, plugins, processors
from samplekit.cli.errors import GuardedGroup

app = typer.Typer(
    cls=GuardedGroup,
    name="samplekit",
    help="Plugin-based sampling for autoregressive text generation.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from samplekit import __version__

        typer.echo(f"samplekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print samplekit's version and exit.")] = False,
) -> None:
    """Plugin-based sampling for autoregressive text generation."""


app.command("generate")(generate.generate)
app.command("processors")(processors.processors)
app.command("plugins")(plugins.plugins)
app.command("info")(info.info)
app.add_typer(config.app, name="config")
app.command("compare")(importlib.import_module("samplekit.cli.compare").compare)
app.command("record")(importlib.import_module("samplekit.cli.record").record)
app.command("explain")(importlib.import_module("samplekit.cli.explain").explain)
app.command("export")(importlib.import_module("samplekit.cli.export").export)
app.command("run")(importlib.import_module("samplekit.cli.run").run)
app.command("serve")(importlib.import_module("samplekit.cli.serve").serve)


def _add_bench() -> None:
    """``samplekit bench`` lives in samplekit/cli/bench.py (the engine's module), when present."""
    if importlib.util.find_spec("samplekit.cli.bench") is None:
        return
    bench = importlib.import_module("samplekit.cli.bench")
    if hasattr(bench, "register"):
        bench.register(app)
    elif isinstance(getattr(bench, "app", None), typer.Typer):
        app.add_typer(bench.app, name="bench")
    elif callable(getattr(bench, "bench", None)):
        app.command("bench")(bench.bench)


_add_bench()


def main() -> None:
    """The console script ``samplekit``."""
    app()


__all__ = ["app", "main"]
