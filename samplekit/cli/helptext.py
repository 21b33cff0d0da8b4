"""The help screens' value column: words, not Typer's ``<bool>``/``<str>`` placeholders.

A flag (``--help`` included) shows no value; an argument shows only its name; an option without
its own metavar shows what it takes in capitals, as click writes it (TEXT, INTEGER, FLOAT); one
with a metavar (PATH, N, FOLDER) keeps it. Applied once to the command tree (``tidy``).
"""

from __future__ import annotations

from typing import Any

_WORDS = {"text": "TEXT", "str": "TEXT", "integer": "INTEGER", "int": "INTEGER", "float": "FLOAT",
          "path": "PATH", "file": "FILE", "boolean": "BOOLEAN", "bool": "BOOLEAN"}


def tidy(command: Any) -> None:
    """Give every parameter of ``command`` (and of its subcommands) a plain value word."""
    for param in getattr(command, "params", ()):
        _tidy_param(param)
    get_help_option = getattr(command, "get_help_option", None)
    if get_help_option is not None:
        def plain_help_option(ctx, _original=get_help_option):
            option = _original(ctx)
            if option is not None:
                _tidy_param(option)
            return option
        command.get_help_option = plain_help_option
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)


def tidy_params(params: list) -> list:
    """``params``, each given a plain value word (for parameters added after ``tidy`` ran)."""
    for param in params:
        _tidy_param(param)
    return params


def _tidy_param(param: Any) -> None:
    if getattr(param, "param_type_name", "") == "argument":
        if hasattr(param, "display_type_rich"):  # its name (PROMPT, FILE...) says it already
            param.display_type_rich = lambda ctx: None
        return
    if param.metavar is not None:
        return
    if getattr(param, "is_flag", False):
        param.metavar = ""
        return
    word = _WORDS.get(_type_name(param))
    if word is not None:
        param.metavar = word


def _type_name(param: Any) -> str:
    """``int``, ``text``...: the parameter's type, ranges and lists reduced to their element."""
    kind = getattr(param, "type", None)  # click's ParamType (absent on some Typer versions' params)
    if kind is not None:
        name = getattr(kind, "name", "")
    else:
        try:
            name = str(param.bare_type())  # Typer's own: str, int, list[int], ...
        except Exception:  # noqa: BLE001 - an unknown Typer: leave the placeholder
            return ""
    name = name.strip("<>").removesuffix(" range")
    return name[5:-1] if name.startswith("list[") and name.endswith("]") else name
