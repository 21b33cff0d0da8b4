"""The ``samplekit`` command line: a thin Typer app over the library.

Every command lives in its own small module; ``errors.GuardedGroup`` is the one error boundary
(a ``SampleKitError`` prints ``error: <message>`` and exits 2, no traceback).
"""

from __future__ import annotations

import importlib.util

import typer

from samplekit.cli import config, generate, info, plugins, processors
from samplekit.cli.errors import GuardedGroup

app = typer.Typer(
    cls=GuardedGroup,
    name="samplekit",
    help="Plugin-based sampling for autoregressive text generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("generate")(generate.generate)
app.command("processors")(processors.processors)
app.command("plugins")(plugins.plugins)
app.command("info")(info.info)
app.add_typer(config.app, name="config")


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
