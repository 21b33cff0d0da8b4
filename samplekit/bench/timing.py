"""Timing and memory for the benchmarks: paired medians, peak memory, library versions."""

from __future__ import annotations

import platform
import re
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["PeakMemory", "paired", "sync", "timed", "version"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (the device synchronised before and after)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def paired(times: Sequence[float], base: Sequence[float]) -> float:
    """Median over the repeats of ``times[r] / base[r]`` (the two ran one after the other)."""
    return statistics.median(t / b for t, b in zip(times, base))


def version(module: str) -> str | None:
    """An installed distribution's version, None when unknown."""
    try:
        from importlib.metadata import version as installed

        return installed(module)
    except Exception:  # noqa: BLE001 - any metadata problem: unknown
        return None


class PeakMemory:
    """Peak memory growth (MiB) during a block: CUDA allocator, else resident set size (Linux
    VmHWM reset through ``/proc/self/clear_refs``; elsewhere the ``ru_maxrss`` delta, which only
    shows new peaks)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                found = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        except OSError:
            return None
        return int(found.group(1)) if found else None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.hwm = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.base, self.hwm = self._status("VmRSS"), True
        except OSError:
            pass
        if not self.hwm or self.base is None:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.hwm = False
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.hwm:
            self.mib = ((self._status("VmHWM") or self.base) - self.base) / 1024
        else:  # ru_maxrss: KiB on Linux, bytes on macOS
            scale = 2**20 if platform.system() == "Darwin" else 1024
            self.mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base) / scale
        return False
