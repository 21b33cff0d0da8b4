"""A driver killed by SIGKILL leaves no process it started behind: the reaper's watcher ends them
(Ray's agents outlived a killed `run --engine ray` driver)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

from tests.helpers_models import make_tiny_checkpoint

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="the reaper reads /proc (Linux)")
DRIVER = r"""
import subprocess, sys, time
from samplekit.jobs.reaper import Reaper
reaper = Reaper.start()
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, time; subprocess.Popen(['sleep', '600'], start_new_session=True); time.sleep(600)"])
time.sleep(1)  # the grandchild started
reaper.track()
print("ready", flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap the dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until_gone(pids, seconds: float = 60) -> list[int]:
    """The pids still running after ``seconds`` (polled; a hang guard, not a timing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if running(p)]


@contextmanager
def driver_process(argv: list[str], **options):
    """The driver subprocess, killed on the way out if the test left it running."""
    driver = subprocess.Popen(argv, **options)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            driver.kill()


def assert_killing_it_ends(driver, started: list[int]) -> None:
    """SIGKILL the driver: every process in ``started`` is gone soon after."""
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert wait_until_gone(started) == []


def test_the_processes_a_killed_driver_started_are_ended_detached_ones_included(tmp_path):
    from samplekit.jobs.reaper import descendants

    with driver_process([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()) as driver:
        assert driver.stdout.readline().strip() == "ready"
        started = [pid for pid in descendants(driver.pid) if running(pid)]
        assert len(started) >= 3, started  # the watcher, the child, the detached grandchild
        assert_killing_it_ends(driver, started)


def test_the_reaper_never_ends_processes_started_before_it_or_not_belonging():
    """A Ray cluster the caller started (a fixture, an application's own children) is not the
    run's to end."""
    from samplekit.jobs.reaper import Reaper, is_ray

    before = subprocess.Popen(["sleep", "60"])
    reaper = Reaper.start(is_ray)
    after = subprocess.Popen(["sleep", "60"])  # started later, but not Ray's
    try:
        reaper.track()
        reaper.close()
        reaper.process.wait(timeout=30)
        assert before.poll() is None and after.poll() is None
    finally:
        for process in (before, after):
            process.kill()
            process.wait()


def test_a_sigkilled_ray_driver_leaves_no_ray_process(tmp_path):
    """A real `run --engine ray` (its own local cluster, in a subprocess), killed while results
    arrive: its agents and every other process it started are gone soon after."""
    pytest.importorskip("ray.data", reason="Ray Data is an optional extra")
    from samplekit.jobs.reaper import descendants

    ckpt = make_tiny_checkpoint(tmp_path, context_length=32)
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"prompt": f"the {i}", "max_new_tokens": 64}) + "\n" for i in range(400)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = tmp_path / "o.jsonl"
    argv = [sys.executable, "-m", "samplekit", "run", str(requests), "-o", str(out), "--checkpoint", str(ckpt),
            "--device", "cpu", "--engine", "ray", "--batch-size", "2"]
    with driver_process(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as driver:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size):  # results coming
            time.sleep(0.5)
        started = list(descendants(driver.pid))
        assert any("Agent" in open(f"/proc/{p}/cmdline").read() for p in started if running(p)), started
        assert_killing_it_ends(driver, started)
