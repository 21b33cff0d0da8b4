"""The CLI's one error boundary.

A ``SampleKitError`` is a problem with the user's input (a config, a flag, a checkpoint, a
plugin): ``samplekit`` prints ``error: <message>`` on stderr and exits with status 2, no
traceback. Usage errors found by Typer/Click (an unknown option, a missing argument) exit 2 too.
Python warnings (a plugin that failed to load) print as one ``warning: ...`` line.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import typer
from typer.core import TyperGroup

from samplekit.errors import SampleKitError

EXIT_USER_ERROR = 2


def fail(message: str) -> "typer.Exit":
    """Print ``error: message`` on stderr; return the Exit(2) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {message}", err=True)


@contextmanager
def plain_warnings():
    """Show Python warnings as ``warning: message`` lines instead of file:line reports."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


class GuardedGroup(TyperGroup):
    """The root command group: every subcommand runs inside the error boundary."""

    def invoke(self, ctx):
        with plain_warnings():
            try:
                return super().invoke(ctx)
            except SampleKitError as exc:
                raise fail(str(exc)) from None
