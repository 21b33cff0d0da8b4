"""``quiet_native_logs``: native glog lines written to descriptor 2 are dropped, everything else
(other bytes on descriptor 2, Python's sys.stderr) reaches the real standard error."""

from __future__ import annotations

import os
import subprocess
import sys

from samplekit.native_logs import is_native_log

RAY_LINE = (b"[2026-12-07 22:37:49,005 E 25196 25196] core_worker.cc:2465: Actor with class name: 'MapWorker' "
            b"has constructor arguments in the object store and max_restarts > 0.")


def test_glog_lines_are_recognised_and_fatal_ones_kept():
    assert is_native_log(RAY_LINE)
    assert is_native_log(RAY_LINE.replace(b" E ", b" W ").replace(b"core_worker.cc", b"logging.cc"))
    assert not is_native_log(RAY_LINE.replace(b" E ", b" F "))
    assert not is_native_log(b"error: ray: the job failed")
    assert not is_native_log(b"[2026-12-07] something.cc:1: not glog")


def test_descriptor_2_loses_only_the_native_lines_and_python_stderr_is_untouched():
    code = f"""
import os, sys
from samplekit.native_logs import quiet_native_logs
with quiet_native_logs():
    os.write(2, {RAY_LINE!r} + b"\\n" + b"plain native text\\n")
    print("from python", file=sys.stderr)
    os.write(2, b"no newline at the end")
print("after", file=sys.stderr)
os.write(2, {RAY_LINE!r} + b"\\n")  # outside: not filtered
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert err.count("core_worker.cc") == 1 and err.endswith(RAY_LINE.decode() + "\n"), err
    for text in ("plain native text\n", "from python\n", "no newline at the end", "after\n"):
        assert text in err, err


def test_run_on_ray_prints_no_native_log_lines(tmp_path):
    import pytest

    pytest.importorskip("ray", reason="Ray Data is an optional extra: pip install 'samplekit-lm[ray]'")
    requests = tmp_path / "requests.txt"
    requests.write_text("ROMEO:\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "samplekit", "run", str(requests), "-o", str(tmp_path / "out.jsonl"),
                           "--engine", "ray", "--max-new-tokens", "2", "--device", "cpu", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert ".cc:" not in done.stderr and "done: 1 of 1 requests" in done.stderr, done.stderr
