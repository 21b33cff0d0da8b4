"""What ``generate`` reads from the user besides flags: the prompt (an argument, ``--prompt``,
``-`` for standard input, ``--prompt-file``) and C-style escapes in ``--stop`` values.

A prompt file or standard input is read as UTF-8, at most ``PROMPT_LIMIT`` bytes; a prompt
file must be a regular file. One trailing newline (``\\n`` or ``\\r\\n``) is dropped from either, as
a shell drops it from ``$(cat file)``: ``echo "ROMEO:" | samplekit generate -`` is the prompt
``ROMEO:``; a prompt meant to end in a newline ends in two.

``--stop "\\n\\n"`` means two newlines, as in llama.cpp and vLLM:
``unescape`` turns ``\\n \\t \\r \\0 \\\\ \\" \\' \\xHH \\uXXXX \\UXXXXXXXX`` into the characters
they name; any other backslash is an error (a literal backslash is ``\\\\``).

    >>> unescape(r"\\n\\nEND\\u00e9\\\\", "--stop")
    '\\n\\nEND\\xe9\\\\'
"""

from __future__ import annotations

import re
import sys

from samplekit.errors import ConfigError
from samplekit.messages import not_utf8, short_repr
from samplekit.safe_io import MiB, decode_utf8, describe_size, read_text

PROMPT_LIMIT = MiB  # bytes of a prompt from a file or standard input
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'",
           "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.?)", re.DOTALL)


def unescape(text: str, origin: str) -> str:
    """``text`` with its C-style escapes replaced; a malformed escape raises ConfigError."""
    def replace(match: re.Match) -> str:
        code = match.group(1)
        if code in _SIMPLE:
            return _SIMPLE[code]
        if code[:1] in ("x", "u", "U") and len(code) > 1:
            value = int(code[1:], 16)
            if value > 0x10FFFF:
                raise ConfigError(f"{origin} {short_repr(text)}: \\{code} is beyond Unicode (at most \\U0010ffff)")
            return chr(value)
        shown = f"\\{code}" if code else "a backslash at the end"
        raise ConfigError(f"{origin} {short_repr(text)}: {shown} is not an escape; use \\n \\t \\r \\0 "
                          "\\\\ \\\" \\xHH \\uXXXX or \\UXXXXXXXX (a literal backslash is \\\\)")
    return _ESCAPE.sub(replace, text)


def check_text(text: str, origin: str) -> str:
    """``text`` if it can be encoded as UTF-8 (a command-line argument of invalid bytes arrives
    as lone surrogates), else a ConfigError naming ``origin``."""
    problem = not_utf8(text)
    if problem:
        raise ConfigError(f"{origin}: not valid UTF-8 text ({problem})")
    return text


def read_prompt(positional: str | None, option: str | None, file: str | None) -> str:
    """The prompt from exactly one of: the argument (``-``: standard input), ``--prompt``,
    ``--prompt-file``; a ConfigError when none or several are given."""
    given = [name for name, value in (("the PROMPT argument", positional), ("--prompt", option),
                                      ("--prompt-file", file)) if value is not None]
    if len(given) > 1:
        raise ConfigError(f"the prompt is given twice ({' and '.join(given)}); give it once")
    if not given:
        raise ConfigError("no prompt: pass it as an argument, with --prompt, with --prompt-file PATH, "
                          "or `-` to read standard input")
    if file is not None:
        return strip_final_newline(read_text(file, limit=PROMPT_LIMIT, what="prompt file"))
    if positional == "-":
        return strip_final_newline(read_stdin())
    text = positional if positional is not None else option
    return check_text(text, "the prompt" if positional is not None else "--prompt")


def strip_final_newline(text: str) -> str:
    """``text`` without one trailing ``\\n`` or ``\\r\\n`` (only one: ``"a\\n\\n"`` gives ``"a\\n"``)."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def read_stdin(limit: int = PROMPT_LIMIT) -> str:
    """Standard input as UTF-8 text, at most ``limit`` bytes."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (a test harness)
        data = (sys.stdin.read(limit + 1) if sys.stdin is not None else "").encode("utf-8", "surrogateescape")
    else:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ConfigError(f"standard input: the prompt is larger than the limit of {describe_size(limit)}")
    return decode_utf8(data, "standard input", "prompt")
