"""Two `samplekit run`s on one output: the refused one never touches the other's files.

The windows between opening the output, locking it and removing a file that a failed run created
are widened deterministically: a hook runs the other run's step inside them (no timing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.jobs import outputs
from samplekit.jobs.outputs import OutputError, ResultFile
from tests.helpers_models import make_tiny_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(os, "O_EXCL"), reason="POSIX file creation")
fcntl = pytest.importorskip("fcntl")
RECORD = {"id": 1, "line": 1, "index": 0, "text": "x", "tokens": [1], "finish_reason": "length",
          "prompt_tokens": 1, "completion_tokens": 1, "seed": 0}


def result_file(path: Path) -> ResultFile:
    return ResultFile(str(path), {"input_sha256": "abc"}, {1: 1})


def assert_refused(second: ResultFile) -> None:
    with pytest.raises(OutputError, match="another samplekit run is writing this output"):
        second.open()


def test_a_run_refused_by_the_lock_keeps_the_files_the_other_run_created_after_it_looked(tmp_path, monkeypatch):
    """The issue's race: the second run looks (no file), the first creates and locks, the second
    opens the same file and is refused: the first run's output and .meta stay, and it finishes."""
    out = tmp_path / "out.jsonl"
    first, second = result_file(out), result_file(out)
    real_open, started = os.open, []

    def open_after_the_other_run(path, flags, *args):
        if Path(path) == out and not started:
            started.append(True)
            first.open()
        return real_open(path, flags, *args)

    monkeypatch.setattr(outputs.os, "open", open_after_the_other_run)
    assert_refused(second)
    monkeypatch.undo()
    assert out.exists() and Path(first.meta_path).exists()
    first.write([RECORD])
    first.close()
    assert [json.loads(line) for line in out.read_text().splitlines()] == [RECORD]


def test_a_run_that_created_the_file_but_lost_the_lock_does_not_remove_it(tmp_path, monkeypatch):
    """The second run creates the file, the first opens it and locks first: the second is
    refused and leaves the file (now the first run's) alone."""
    out = tmp_path / "out.jsonl"
    first, second = result_file(out), result_file(out)
    real_lock = ResultFile._lock

    def lock_after_the_other_run(self):
        if self is second:
            first.open()
        real_lock(self)

    monkeypatch.setattr(ResultFile, "_lock", lock_after_the_other_run)
    assert_refused(second)
    assert out.exists() and Path(first.meta_path).exists()
    first.write([RECORD])
    first.close()
    assert out.read_text().count("\n") == 1


def test_a_run_whose_file_was_removed_before_it_locked_writes_to_the_path_not_to_a_ghost(tmp_path, monkeypatch):
    """The first run created the file and failed (removing it) while the second held it open
    unlocked: the second must not keep writing to the removed file."""
    out = tmp_path / "out.jsonl"
    first, second = result_file(out), result_file(out)
    first.open()
    real_lock = ResultFile._lock

    def lock_after_the_other_run_failed(self):
        if self is second and first._fd is not None:
            first.close(failed=True)  # created it, wrote nothing: removes it
        real_lock(self)

    monkeypatch.setattr(ResultFile, "_lock", lock_after_the_other_run_failed)
    second.open()
    second.write([RECORD])
    second.close()
    assert [json.loads(line) for line in out.read_text().splitlines()] == [RECORD]
    assert Path(second.meta_path).exists()


def test_a_failed_run_removes_only_the_empty_output_it_created(tmp_path):
    out = tmp_path / "out.jsonl"
    created = result_file(out).open()
    created.close(failed=True)
    assert not out.exists() and not Path(created.meta_path).exists()
    out.write_text("")
    Path(created.meta_path).write_text("{}")
    existing = result_file(out).open()
    existing.close(failed=True)
    assert out.exists(), "a file this run did not create was removed"


def test_the_cli_run_refused_by_a_held_lock_leaves_the_output_byte_for_byte(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny")
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"prompt": "the", "max_new_tokens": 2}\n')
    out = tmp_path / "out.jsonl"
    holder = result_file(out).open()
    holder.write([RECORD])
    before = out.read_bytes(), Path(holder.meta_path).read_bytes()
    result = CliRunner().invoke(app, ["run", str(requests), "-o", str(out), "--checkpoint", str(ckpt),
                                      "--device", "cpu", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "another samplekit run" in result.stderr
    assert (out.read_bytes(), Path(holder.meta_path).read_bytes()) == before
    holder.close()


def test_a_failed_request_is_written_with_its_error_message(tmp_path, monkeypatch):
    """A chain that raises mid-generation: the request's lines say "error" and what failed."""
    from samplekit.chain import ChainRun

    def broken(self, input_ids, scores):
        raise RuntimeError("the chain broke")

    monkeypatch.setattr(ChainRun, "select", broken)
    ckpt = make_tiny_checkpoint(tmp_path / "tiny")
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"prompt": "the", "max_new_tokens": 2, "n": 2}\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["run", str(requests), "-o", str(out), "--checkpoint", str(ckpt),
                                      "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["finish_reason"], r.get("error")) for r in records] == [
        ("error", "RuntimeError: the chain broke")] * 2
