"""`samplekit run --engine ray` on a real local Ray cluster (started here, shut down after).

The Ray output must be the local engine's, line for line (as sets: both write in completion
order); a worker killed on its first batch must cost nothing (Ray restarts it and retries the
batch; nothing lost, nothing twice); a resumed Ray run dispatches only what is missing. Every
run has a time limit, so a starved cluster fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samplekit.cli import app
from tests.helpers_models import make_tiny_checkpoint

ray = pytest.importorskip("ray", reason="Ray Data is an optional extra: pip install 'samplekit-lm[ray]'")
pytest.importorskip("ray.data")

runner = CliRunner()
LIMIT = 180  # seconds for one run, cluster start excluded
REQUESTS = [{"prompt": f"the {i} ", "max_new_tokens": 4 + i % 5, **({"n": 2} if i % 4 == 0 else {}),
             **({"config": "greedy"} if i == 5 else {})} for i in range(12)]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for this module: 4 logical CPUs on whatever the machine has, so two
    one-CPU actors leave room for the tasks that read the dataset."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray")
    ckpt = str(make_tiny_checkpoint(folder, context_length=32))
    requests = folder / "requests.jsonl"
    requests.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    local = folder / "local.jsonl"
    result = runner.invoke(app, ["run", str(requests), "-o", str(local), "--checkpoint", ckpt, "--device", "cpu",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    return ckpt, requests, local


def invoke(args: list[str]):
    """``runner.invoke`` with a time limit."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", runner.invoke(app, args)), daemon=True)
    thread.start()
    thread.join(LIMIT)
    if thread.is_alive():
        pytest.fail(f"samplekit {' '.join(args)} did not finish in {LIMIT} s")
    return box["result"]


def ray_run(setup, out: Path, *more: str):
    ckpt, requests, _ = setup
    return invoke(["run", str(requests), "-o", str(out), "--checkpoint", ckpt, "--device", "cpu", "--engine", "ray",
                   "--workers", "2", "--batch-size", "4", *more])


def sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


def test_a_dying_worker_is_retried_and_the_output_equals_the_local_engines(cluster, setup, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv("SAMPLEKIT_TEST_RAY_CRASH", str(marker))  # the first batch's actor calls os._exit
    out = tmp_path / "ray.jsonl"
    result = ray_run(setup, out, "--quiet")
    assert result.exit_code == 0, result.output
    assert marker.exists()  # a worker did die
    got = sorted_lines(out)
    assert got == sorted_lines(setup[2])  # every sample, the same bytes as the local engine's
    keys = [(r["line"], r["index"]) for r in map(json.loads, got)]
    assert len(keys) == len(set(keys)) == 15  # nothing twice: 12 requests, 3 of them with n=2


def test_a_resumed_ray_run_dispatches_only_what_is_missing(cluster, setup, tmp_path):
    out = tmp_path / "ray.jsonl"
    local = setup[2]
    whole = local.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(whole[:7]) + whole[7][:5])  # as a kill would leave it
    Path(f"{out}.meta").write_bytes(Path(f"{local}.meta").read_bytes())  # made by the local engine
    samples = Counter(json.loads(x)["line"] for x in whole)
    kept = Counter(json.loads(x)["line"] for x in whole[:7])
    done = [line for line in kept if kept[line] == samples[line]]  # the 7th line may be half a request
    result = ray_run(setup, out)
    assert result.exit_code == 0, result.output
    assert sorted_lines(out) == sorted_lines(local)
    ran = re.search(r"This run: (\d+) requests", result.stderr)
    assert ran and int(ran.group(1)) == 12 - len(done), result.stderr


def test_a_model_a_worker_cannot_load_is_one_error(cluster, setup, tmp_path):
    _, requests, _ = setup
    out = tmp_path / "ray.jsonl"
    result = invoke(["run", str(requests), "-o", str(out), "--checkpoint", str(tmp_path / "missing.pt"),
                     "--engine", "ray", "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: checkpoint {tmp_path / 'missing.pt'} does not exist "
                                                      "(pass a .pt file, a Hugging Face GPT-2 folder, or 'demo')")
    assert not out.exists()
