"""Bounded text for error messages: a value's repr, cut short, and a message on one line.

A value in an error message may come from a hostile input (a 254 MB string, a deeply nested list,
an integer of a million digits), so every message shows values through ``short_repr``, which
never builds more than a few hundred characters whatever the value:

    >>> short_repr("x" * 1000, limit=20)
    "'xxxxxxxxxxxxxxx...'"
    >>> short_repr(10 ** 5000)
    '<int of 5001 digits>'
    >>> one_line("invalid config:\\n  a\\n  b")
    'invalid config: a b'
"""

from __future__ import annotations

import reprlib
import sys

SHORT = 80  # characters of a value shown in a message
LONG = 2000  # characters of a whole message at most

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = 6
_repr.maxstring = _repr.maxother = _repr.maxlong = SHORT


def _int_repr(x: int, level: int) -> str:
    digits = _digits(x)
    return repr(x) if digits <= SHORT else f"<int of {digits} digits>"


def _digits(x: int) -> int:
    """Decimal digits of ``x`` (without building its decimal string)."""
    bits = abs(x).bit_length()
    if bits < 60 or bits * 0.30103 < getattr(sys, "get_int_max_str_digits", lambda: 4300)() - 10:
        return len(str(abs(x)))
    return int(bits * 0.30103) + 1


_repr.repr_int = _int_repr


def short_repr(value: object, limit: int = SHORT) -> str:
    """``repr(value)``, at most ``limit`` characters (``...`` marks a cut); bounded work."""
    try:
        text = _repr.repr(value)
    except Exception:  # a hostile __repr__: say what it is instead
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        quote = text[0] if text[:1] in ("'", '"') else ""
        text = text[: max(limit - 3 - len(quote), 1)] + "..." + quote
    return text


def one_line(text: str, limit: int = LONG) -> str:
    """``text`` with every run of whitespace (newlines, tabs) as one space, at most ``limit``
    characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_utf8(text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (a lone surrogate, as invalid bytes on a command
    line arrive), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"character {exc.start} is a lone surrogate {text[exc.start]!r}"
    return None
