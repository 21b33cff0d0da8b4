"""Reading files a user names: regular files only, size-limited, with one clear error.

A FIFO would block forever, ``/dev/zero`` never ends, a directory or a missing file raises an
OSError: ``read_bytes`` refuses them all with the error class the caller chooses (a
``ConfigError`` for configs, a ``CheckpointError`` for model files), naming the file, what it is
and the limit. ``load_json_file`` adds a bounded, strict JSON parse (for Hugging Face
``config.json`` and the like). ``atomic_write`` replaces a file only once its new contents are
whole on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from samplekit.errors import ConfigError
from samplekit.messages import short_repr

MiB = 1 << 20
FILE_LIMIT = MiB  # the default limit: a JSON model config, a prompt file
MAX_DEPTH = 64  # nesting of arrays and objects in a JSON value (as of collections in a YAML config)


def describe_size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_bytes(path: str | os.PathLike, *, limit: int = FILE_LIMIT, what: str = "file",
               error: type[Exception] = ConfigError) -> bytes:
    """The contents of the regular file ``path``, at most ``limit`` bytes; anything else
    (missing, unreadable, a directory, FIFO or device, too large) raises ``error`` naming it."""
    path = Path(path)
    name = str(path) if len(str(path)) <= 200 else short_repr(str(path), 200)  # as shown in errors
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not block; the fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{name}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{name}: the {what} is a directory; expected a regular file") from None
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL in the name
        raise error(f"{name}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise error(f"{name}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{name}: the {what} is {_kind(info.st_mode)}; expected a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:
            raise error(f"{name}: the {what} is {describe_size(info.st_size)}; the limit is "
                        f"{describe_size(limit)}")
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise error(f"{name}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(data) > limit:  # it grew while we read it
        raise error(f"{name}: the {what} is larger than the limit of {describe_size(limit)}")
    return data


def read_text(path: str | os.PathLike, *, limit: int = FILE_LIMIT, what: str = "file",
              error: type[Exception] = ConfigError) -> str:
    """``read_bytes`` decoded as UTF-8; invalid UTF-8 raises ``error`` naming the byte offset."""
    data = read_bytes(path, limit=limit, what=what, error=error)
    return decode_utf8(data, f"{path}", what, error)


def decode_utf8(data: bytes, source: str, what: str = "file",
                error: type[Exception] = ConfigError) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{source}: the {what} is not valid UTF-8 (line {line}, byte {exc.start}: "
                    f"{data[exc.start:exc.start + 1]!r})") from None


def load_json_file(path: str | os.PathLike, *, limit: int = FILE_LIMIT, what: str = "JSON file",
                   error: type[Exception] = ConfigError) -> Any:
    """Parse the JSON file ``path`` (a regular file of at most ``limit`` bytes, UTF-8, not nested
    too deep, no duplicate keys, no NaN/Infinity); every problem raises
    ``error`` naming the file and, where known, the line."""
    text = read_text(path, limit=limit, what=what, error=error)
    return loads_json(text, f"{path}", what=what, error=error)


def loads_json(text: str, source: str, *, what: str = "JSON file",
               error: type[Exception] = ConfigError, lines: bool = True, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with the checks of ``load_json_file``; ``lines=False`` for one line of a
    JSON Lines file (the caller's ``source`` names the line: only the column is said). Arrays
    and objects nested more than ``max_depth`` deep are refused (whatever walks the value
    recursively later, a copy or a digest, would otherwise end in a RecursionError)."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}" if lines else f"column {exc.colno}"
        raise error(f"{source}: invalid JSON at {at}: {exc.msg}") from None
    except RecursionError:
        raise error(f"{source}: the {what} is nested too deep") from None
    except ValueError as exc:  # our hooks, an int of too many digits
        raise error(f"{source}: invalid {what}: {exc}") from None
    if nesting_depth(value) > max_depth:
        raise error(f"{source}: the {what} is nested more than {max_depth} deep (arrays and objects inside "
                    "each other)")
    return value


def nesting_depth(value: Any) -> int:
    """How deep lists and dicts nest in ``value`` (a scalar: 0, ``[]``: 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new contents into: a temporary file in the same folder,
    flushed to disk and renamed over ``path`` when the block ends, removed when it raises. A
    failed write (a full disk) leaves the old ``path`` as it was.

        with atomic_write("plot.png") as f:
            figure.savefig(f, format="png")
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {short_repr(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
