"""The CLI's one error boundary.

A ``SampleKitError`` is a problem with the user's input (a config, a flag, a checkpoint, a
plugin): ``samplekit`` prints ``error: <message>`` on stderr, on ONE line, and exits with status 2,
no traceback. So do usage errors found by Typer/Click (an unknown option, a missing argument,
``--length abc``: no boxes, a hint to ``--help`` instead), and the user errors that arrive as
plain Python exceptions: an OSError or UnicodeError reading a file the user named, a
RecursionError or MemoryError from parsing what they wrote. Messages never advise loading a
checkpoint with ``weights_only=False``. Python warnings print as one ``warning: ...`` line.
"""

from __future__ import annotations

import errno
import re
import sys
import warnings
from contextlib import contextmanager

import typer
import typer.core
from typer.core import TyperGroup

from samplekit.errors import SampleKitError
from samplekit.messages import one_line

EXIT_USER_ERROR = 2
# The click Typer parses with: its own vendored copy (typer >= 0.24) or the click package.
_click = getattr(typer.core, "_click", None) or getattr(typer.core, "click")
ClickException = _click.exceptions.ClickException
NoArgsIsHelpError = getattr(_click.exceptions, "NoArgsIsHelpError", ())
Abort = typer.Abort

# Advice to load a checkpoint unsafely (torch's, or a re-save recipe built on it): never relayed.
_UNSAFE = re.compile(
    r"weights_only\W*(=|\s+set\s+to|\s+to)\W*False|safe_globals|arbitrary code|trusted source|"
    r"trust the source|trust this|can still be loaded|changed the default value of the .weights_only|"
    r"Alternatively, to load with",
    re.IGNORECASE)
_RECIPE = re.compile(r"If you trust")  # from here on, a recipe that starts with the unsafe load
_SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n+")


def user_message(text: str) -> str:
    """``text`` as one line, without any advice to load a file with ``weights_only=False``."""
    text = str(text)
    if _UNSAFE.search(text):
        cut = _RECIPE.search(text)
        if cut:
            text = text[: cut.start()]
        text = " ".join(s for s in _SENTENCE.split(text) if s and not _UNSAFE.search(s))
    return one_line(text)


def fail(message: str) -> "typer.Exit":
    """Print ``error: message`` (on one line) on stderr; return the Exit(2) to raise."""
    typer.echo(f"error: {user_message(message)}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {one_line(str(message))}", err=True)


@contextmanager
def plain_warnings():
    """Show Python warnings as ``warning: message`` lines instead of file:line reports."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def os_error_message(exc: OSError) -> str:
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}"


def usage_message(exc: ClickException) -> str:
    """A Click usage error as one line, with the command to ask for help."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "samplekit"
    return f"{one_line(exc.format_message(), 500)} (see `{command} --help`)"


class GuardedGroup(TyperGroup):
    """The root command group: every subcommand runs inside the error boundary, and usage
    errors print as one ``error:`` line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from samplekit.cli.helptext import tidy

        tidy(self)

    def get_params(self, ctx):
        from samplekit.cli.helptext import tidy_params

        return tidy_params(super().get_params(ctx))  # Typer adds the completion options late

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # the help is already shown
            if exc.format_message().strip():
                typer.echo(exc.format_message(), err=True)
            sys.exit(EXIT_USER_ERROR)
        except ClickException as exc:
            typer.echo(f"error: {usage_message(exc)}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        with plain_warnings():
            try:
                return super().invoke(ctx)
            except SampleKitError as exc:
                raise fail(str(exc)) from None
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # stdout closed early (| head): not an error to report
                    raise
                raise fail(os_error_message(exc)) from None
            except UnicodeError as exc:
                raise fail(f"text that is not valid UTF-8 ({exc})") from None
            except RecursionError:
                raise fail("the input is nested too deep") from None
            except MemoryError:
                raise fail("out of memory: the input or the requested generation is too large "
                           "(lower --length or --num-samples)") from None
