"""How many CPU threads torch uses for a command that runs a model.

``--threads N`` wins; else ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``), which torch has already
read, is kept; else the default: torch's own choice (one thread per physical core) lowered to
the cores that other work leaves idle, at least 1. Idle cores are the usable cores (the CPU
affinity mask and a cgroup's CPU quota) minus the one-minute load average. On an idle machine
that is torch's default; on a busy one it is fewer threads, down to 1, because threads that
wait for a core cost more than they add (a loaded 2-core machine ran ``compare`` 4.6x faster
with 1 thread than with torch's 2).
"""

from __future__ import annotations

import math
import os

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota else cores)


def cgroup_cpu_quota(path: str = CGROUP_CPU_MAX) -> int | None:
    """A cgroup v2 CPU quota in whole cores (at least 1), or None without one."""
    try:
        with open(path, encoding="ascii") as handle:
            fields = handle.read().split()
        quota, period = fields[0], fields[1]
        return None if quota == "max" else max(1, math.floor(int(quota) / int(period)))
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        return None


def load_average() -> float:
    """The one-minute load average (runnable processes), 0 where the system has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(torch_default: int, cores: int, load: float) -> int:
    """``min(torch's default, cores - load)``, rounded, at least 1."""
    idle = int(cores - load + 0.5)
    return max(1, min(torch_default, cores, idle))


def chosen_threads(requested: int | None, torch_default: int, environ=os.environ) -> int | None:
    """The thread count to set, or None to keep torch's (``OMP_NUM_THREADS`` set, no ``--threads``)."""
    if requested:
        return requested
    if any(environ.get(name, "").strip() for name in THREAD_ENV):
        return None
    return default_threads(torch_default, usable_cores(), load_average())


def apply_threads(requested: int | None = None) -> int:
    """Set torch's CPU threads (see the module docstring); returns the number in use."""
    import torch

    current = torch.get_num_threads()
    wanted = chosen_threads(requested, current)
    if wanted is not None and wanted != current:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()
