"""Keep native libraries' log lines off the user's standard error.

Ray's C++ core writes glog lines such as ``[2026-12-07 22:37:49,005 E 25196 25196]
core_worker.cc:2465: Actor ... has constructor arguments in the object store ...`` straight to
file descriptor 2, where Python's logging settings cannot reach them. ``quiet_native_logs``
points descriptor 2 at a pipe for its duration and forwards every line except such glog lines
(fatal ``F`` lines are kept); Python's own ``sys.stderr`` keeps writing to the real standard
error (a terminal stays a terminal for progress bars).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

GLOG = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWE] \d+ \d+\] \S+\.(?:cc|h|cpp):\d+: ")


def is_native_log(line: bytes) -> bool:
    """Whether ``line`` is a non-fatal glog line from a native library."""
    return GLOG.match(line) is not None


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Drop native glog lines written to descriptor 2 while inside; pass everything else on."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no descriptor 2 (an embedded interpreter)
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    previous = sys.stderr
    sys.stderr = os.fdopen(os.dup(real), "w", buffering=1, encoding=getattr(previous, "encoding", None) or "utf-8",
                           errors="backslashreplace")
    pump = threading.Thread(target=_forward, args=(read_end, real), name="native-logs", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = previous
        os.dup2(real, 2)  # closes the pipe's last write end held here: the pump sees its end
        pump.join(timeout=2)  # a child process that inherited the pipe may keep it open: not waited for
        if not pump.is_alive():
            os.close(real)


def _forward(read_end: int, real: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_native_log(line))
            if kept:
                _write_all(real, kept)
        if pending and not is_native_log(pending):
            _write_all(real, pending)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the real standard error went away: nothing left to tell
        pass
