"""End the processes a driver started when the driver dies, even by SIGKILL (Linux).

A local Ray cluster started by ``ray.init()`` takes its GCS server and raylet down with the
driver, but Ray's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive a killed
driver. ``Reaper`` starts a small watcher process in its own session, holding the read end of a
pipe whose write end only the driver holds, and tells it the driver's descendants
(``track``: pid and start time, so a reused pid is never hit; only processes started after
the reaper, and of those only what ``belongs``, such as ``is_ray``). When the pipe closes (the driver
closed it, exited or was killed) the watcher sends SIGTERM, then SIGKILL a second later, to each
of them still running.

    reaper = Reaper.start(is_ray)  # None where there is no /proc
    reaper.track()               # after the cluster started, and again later
    ...
    reaper.close()               # after ray.shutdown(): the stragglers go
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

WATCHER = r"""
import os, signal, sys, time
known = [line.split() for line in sys.stdin]  # until the driver closes the pipe, or dies

def alive(pid, start):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19] == start
    except (OSError, IndexError):
        return False

for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid, start in known:
        if alive(pid, start):
            try:
                os.kill(int(pid), sig)
            except OSError:
                pass
    time.sleep(1)
"""


def is_ray(pid: int) -> bool:
    """Whether ``pid`` is one of Ray's processes (its binaries, its Python modules, ``ray::`` names)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        return False
    return command.startswith(b"ray::") or b"/ray/" in command


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of ``pid`` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` (children, grandchildren, ...): pid -> start time."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found is not None:
                children.setdefault(found[0], []).append(int(name))
                starts[int(name)] = found[1]
    out, stack = {}, list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if pid not in out and pid in starts:
            out[pid] = starts[pid]
            stack.extend(children.get(pid, ()))
    return out


class Reaper:
    """The watcher of the module docstring."""

    def __init__(self, process: subprocess.Popen, belongs: Callable[[int], bool]):
        self.process, self.belongs = process, belongs
        self.sent: set[int] = {process.pid, *descendants(os.getpid())}  # what ran before: never tracked

    @classmethod
    def start(cls, belongs: Callable[[int], bool] = lambda pid: True) -> "Reaper | None":
        """A running watcher, or None where processes cannot be listed (no /proc). Only
        descendants started after this call and for which ``belongs(pid)`` holds are tracked."""
        if not os.path.isdir("/proc") or _stat(os.getpid()) is None:
            return None
        process = subprocess.Popen([sys.executable, "-c", WATCHER], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True, text=True)
        return cls(process, belongs)

    def track(self) -> None:
        """Tell the watcher about the driver's new descendants (those that ``belongs``)."""
        if self.process.stdin is None or self.process.stdin.closed:
            return
        new = {pid: start for pid, start in descendants(os.getpid()).items()
               if pid not in self.sent and self.belongs(pid)}
        try:
            self.process.stdin.write("".join(f"{pid} {start}\n" for pid, start in new.items()))
            self.process.stdin.flush()
        except (OSError, ValueError):  # the watcher is gone: nothing more to do
            return
        self.sent.update(new)

    def close(self) -> None:
        """Close the pipe: the watcher ends what is left of the tracked processes, then exits."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
