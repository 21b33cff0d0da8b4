"""`samplekit run` on the local scheduler: output, resume, refusals, bad paths, a full disk,
Ctrl-C, SIGKILL, the context window, and --engine ray without Ray.

A tiny random checkpoint (tests/helpers_models.py) keeps every run to a fraction of a second.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samplekit.cli import app
from tests.helpers_models import make_tiny_checkpoint

runner = CliRunner()
REQUESTS = [
    {"prompt": "the cat", "max_new_tokens": 6},
    {"prompt": "hello world", "id": "b", "n": 2, "max_new_tokens": 5},
    {"prompt": "in the", "stop": "e", "max_new_tokens": 8},
    {"prompt": "", "id": 40, "config": "greedy", "max_new_tokens": 4},
    {"prompt": "all well", "set": ["top_k.k=3"], "n": 3, "max_new_tokens": 5},
    {"prompt": "lo", "seed": 123, "max_new_tokens": 7},
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), context_length=32))


@pytest.fixture
def requests_file(tmp_path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    return path


def run(ckpt, requests, out, *args):
    return runner.invoke(app, ["run", str(requests), "-o", str(out), "--checkpoint", ckpt, "--device", "cpu",
                               "--quiet", *args])


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def key(records: list[dict]) -> list[str]:
    """The output as a sorted list of lines: "the same set of lines"."""
    return sorted(json.dumps(r, sort_keys=True) for r in records)


@pytest.fixture
def reference(ckpt, requests_file, tmp_path, one_torch_thread) -> list[dict]:
    out = tmp_path / "reference.jsonl"
    result = run(ckpt, requests_file, out, "--batch-size", "8")
    assert result.exit_code == 0, result.output
    return lines(out)


def test_one_line_per_sample_as_generate_makes_it(ckpt, requests_file, reference):
    from samplekit import generate
    from samplekit.model.tokenizer import encode_prompt
    from samplekit.jobs.inputs import Defaults, read_jobs
    from samplekit.model.checkpoint import load_checkpoint
    from samplekit.model.tokenizer import tokenizer_for_checkpoint

    assert [(r["line"], r["index"]) for r in sorted(reference, key=lambda r: (r["line"], r["index"]))] == [
        (1, 0), (2, 0), (2, 1), (3, 0), (4, 0), (5, 0), (5, 1), (5, 2), (6, 0)]
    assert set(reference[0]) == {"id", "line", "index", "text", "tokens", "finish_reason", "prompt_tokens",
                                 "completion_tokens", "seed"}
    by = {(r["line"], r["index"]): r for r in reference}
    assert [by[(n, 0)]["id"] for n in range(1, 7)] == [1, "b", 3, 40, 5, 6]
    assert [by[(n, 0)]["seed"] for n in range(1, 7)] == [0, 1, 2, 3, 4, 123]  # --seed 0 + line index
    model, info = load_checkpoint(ckpt)
    enc = tokenizer_for_checkpoint(info)
    for job in read_jobs(str(requests_file), Defaults()).jobs:  # sample 0 of each: what generate draws alone
        ids = encode_prompt(enc, job.prompt)
        (want,) = generate(model, [ids], chain=job.chain, seed=[job.seed], max_new_tokens=job.max_new_tokens,
                           stop=job.stop, tokenizer=enc, batch_invariant=True)
        got = by[(job.line, 0)]
        assert (got["tokens"], got["text"], got["finish_reason"]) == (want.tokens, want.text, want.finish_reason)
        assert got["prompt_tokens"] == len(ids) and got["completion_tokens"] == len(want.tokens)
    assert by[(3, 0)]["finish_reason"] in ("stop", "length", "eos") and "e" not in by[(3, 0)]["text"]


def test_resume_drops_a_partial_line_and_a_partial_request(ckpt, requests_file, reference, tmp_path):
    out = tmp_path / "out.jsonl"
    assert run(ckpt, requests_file, out, "-b", "2").exit_code == 0
    data = out.read_bytes()
    groups = data.splitlines(keepends=True)
    three = next(i for i, r in enumerate(lines(out)) if r["line"] == 5)  # request 5 has 3 samples
    cut = b"".join(groups[:three + 1]) + groups[three + 1][:10]  # one whole line of 5, half of the next
    out.write_bytes(cut)
    result = run(ckpt, requests_file, out, "-b", "3")
    assert result.exit_code == 0, result.output
    got = lines(out)
    assert key(got) == key(reference)
    assert len({(r["line"], r["index"]) for r in got}) == len(got)  # no duplicates
    assert out.read_bytes().startswith(b"".join(groups[:three]))  # what was whole stayed as it was


def test_a_changed_input_or_setting_is_refused_until_overwrite(ckpt, requests_file, tmp_path, one_torch_thread):
    out = tmp_path / "out.jsonl"
    assert run(ckpt, requests_file, out).exit_code == 0
    result = run(ckpt, requests_file, out, "--max-new-tokens", "3")
    assert result.exit_code == 2
    assert result.stderr == (f"error: {out} was made from a different input or settings (--max-new-tokens: was "
                             "not given, now 3); resuming would mix two runs' results: run the same command as before "
                             f"to continue it, or delete {out} or pass --overwrite to start afresh\n")
    requests_file.write_text(requests_file.read_text() + '{"prompt": "more"}\n')
    result = run(ckpt, requests_file, out)
    assert result.exit_code == 2 and "(the input file's content); resuming would mix" in result.stderr
    result = run(ckpt, requests_file, out, "--max-new-tokens", "3", "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(lines(out)) == 10 and [r["completion_tokens"] for r in lines(out) if r["line"] == 7] == [3]
    Path(f"{out}.meta").unlink()
    result = run(ckpt, requests_file, out, "--max-new-tokens", "3")
    assert result.exit_code == 2 and f"has no {out}.meta, so it cannot be resumed safely" in result.stderr


def _read_only_folder(tmp_path) -> Path:
    """A folder where creating a file fails: a mode 555 folder, or /sys for root (who writes anywhere)."""
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    for folder in (locked, Path("/sys")):
        try:
            os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT))
            os.unlink(folder / "probe")
        except PermissionError:
            return folder
        except OSError:
            continue
    pytest.skip("no folder here refuses to create a file")


def test_output_paths_that_cannot_be_written(ckpt, requests_file, tmp_path):
    cases = {tmp_path: "the output is a directory", tmp_path / "no" / "o.jsonl": "the folder",
             requests_file: "the output is the input file"}
    cases[_read_only_folder(tmp_path) / "o.jsonl"] = "cannot write the output (Permission denied)"
    for path, message in cases.items():
        result = run(ckpt, requests_file, path)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: {path}: ") and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert requests_file.read_text().count("\n") == len(REQUESTS)
    result = run(ckpt, requests_file, "-")
    assert result.exit_code == 2 and result.stderr.startswith("error: -o -: the output must be a file")


def test_a_full_disk_leaves_whole_lines_and_a_rerun_completes(ckpt, requests_file, reference, tmp_path,
                                                             monkeypatch):
    from samplekit.jobs import outputs

    out = tmp_path / "out.jsonl"
    real, calls = outputs._os_write, []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) < 3:
            return real(fd, data)
        real(fd, data[: len(data) // 2])  # half of the third request gets out, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs, "_os_write", full_disk)
    result = run(ckpt, requests_file, out, "-b", "2")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {out}: cannot write the output (No space left on device); the 2 "
                                    "requests written so far are whole; free some disk space, then run the same "
                                    "command again to continue")
    assert out.read_bytes().endswith(b"\n") and len({r["line"] for r in lines(out)}) == 2
    monkeypatch.setattr(outputs, "_os_write", real)
    assert run(ckpt, requests_file, out, "-b", "2").exit_code == 0
    assert key(lines(out)) == key(reference)


def test_ctrl_c_stops_after_whole_requests_and_says_how_to_resume(ckpt, requests_file, reference, tmp_path,
                                                                 monkeypatch):
    from samplekit.jobs import local

    real = local.run_local

    def interrupted(jobs, **kw):
        for i, item in enumerate(real(jobs, **kw)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(local, "run_local", interrupted)
    out = tmp_path / "out.jsonl"
    result = run(ckpt, requests_file, out)
    assert result.exit_code == 130
    assert result.stderr == (f"interrupted: 2 of 6 requests are in {out}; run the same command again to "
                             "continue\n")
    assert len({r["line"] for r in lines(out)}) == 2
    monkeypatch.setattr(local, "run_local", real)
    result = runner.invoke(app, ["run", str(requests_file), "-o", str(out), "--checkpoint", ckpt])
    assert result.exit_code == 0
    assert key(lines(out)) == key(reference)
    assert "done: 6 of 6 requests in" in result.stderr and "2 from an earlier run" in result.stderr
    assert "finish reasons: " in result.stderr


def test_skip_invalid_writes_error_records_once(ckpt, tmp_path, one_torch_thread):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "max_new_tokens": 2}\n{"prompt": 3}\nnot json\n{"prompt": "b", "id": 1}\n')
    out = tmp_path / "out.jsonl"
    for _ in range(2):  # the rerun finds everything done
        result = run(ckpt, path, out, "--skip-invalid", "--max-new-tokens", "2")
        assert result.exit_code == 0, result.output
    records = sorted(lines(out), key=lambda r: r["line"])
    assert [(r["line"], r["id"], "error" in r) for r in records] == [(1, 1, False), (2, 2, True), (3, None, True),
                                                                     (4, 1, True)]
    assert records[1]["error"] == f"{path}: line 2: prompt: 3 is not allowed; expected a string"
    assert records[3]["error"] == f"{path}: line 4: id: 1 is also the id of line 1; ids must be unique"


def test_a_prompt_past_the_context_window_runs_and_is_said_once(ckpt, tmp_path, one_torch_thread):
    path = tmp_path / "p.txt"
    path.write_text("the " * 12 + "\n" + "short\n" + "hello " * 12 + "\n")  # 24 tokens + 4 pass 32
    out = tmp_path / "out.jsonl"
    result = run(ckpt, path, out, "--max-new-tokens", "10", "--set", "stop_on_eos=false")
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "context window (32)" in warnings[0], result.stderr
    assert sorted(r["completion_tokens"] for r in lines(out)) == [10, 10, 10]


def test_engine_ray_without_ray_says_how_to_install(requests_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = runner.invoke(app, ["run", str(requests_file), "-o", str(tmp_path / "o.jsonl"), "--engine", "ray"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --engine ray needs Ray Data, which is not installed (")
    assert result.stderr.endswith("): pip install 'samplekit-lm[ray]'\n")
    assert not (tmp_path / "o.jsonl").exists()


def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.005)
    raise AssertionError(f"no {count} lines in {path} (exit status {proc.poll()})")


def test_sigkill_and_sigint_mid_run_then_resume_equals_an_uninterrupted_run(ckpt, tmp_path, one_torch_thread):
    requests = tmp_path / "many.jsonl"
    requests.write_text("".join(json.dumps({"prompt": f"the {i} "}) + "\n" for i in range(30)))
    cmd = [sys.executable, "-m", "samplekit", "run", str(requests), "-o", str(tmp_path / "out.jsonl"),
           "--checkpoint", ckpt, "--device", "cpu", "--quiet", "-b", "1", "--max-new-tokens", "30",
           "--set", "stop_on_eos=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out.jsonl"

    def start():
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    proc = start()
    _wait_for_lines(out, 3, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=30)
    killed_at = out.read_bytes().count(b"\n")
    assert 3 <= killed_at < 30
    proc = start()
    _wait_for_lines(out, killed_at + 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: " in err and "run the same command again to continue" in err
    assert out.read_bytes().count(b"\n") < 30
    result = runner.invoke(app, cmd[3:] + ["-b", "8"])  # in-process; the batch size changes no request's output
    assert result.exit_code == 0, result.output
    whole = tmp_path / "whole.jsonl"
    result = runner.invoke(app, ["run", str(requests), "-o", str(whole), *cmd[7:], "-b", "16"])
    assert result.exit_code == 0, result.output
    got = lines(out)
    assert len({r["line"] for r in got}) == len(got) == 30
    assert key(got) == key(lines(whole))


def test_an_unreachable_ray_address_is_one_error(requests_file, tmp_path):
    pytest.importorskip("ray.data")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "o.jsonl"
    result = runner.invoke(app, ["run", str(requests_file), "-o", str(out), "--engine", "ray",
                                 "--address", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.stderr == (f"error: ray: cannot reach the cluster at 127.0.0.1:{port} (Connection refused); "
                             "check --address or RAY_ADDRESS, and that the cluster is running\n")
    assert not out.exists() and not Path(f"{out}.meta").exists()  # nothing left behind


def test_a_hugging_face_model_folder(tmp_path, one_torch_thread):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import llama_style_tokenizer, model_folder

    from samplekit import generate
    from samplekit.hf import load

    folder = model_folder(tmp_path, "llama", tokenizer=llama_style_tokenizer())
    path = tmp_path / "p.txt"
    path.write_text("hello there\nthe cat sat\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["run", str(path), "-o", str(out), "--model", str(folder), "--device", "cpu",
                                 "--quiet", "--max-new-tokens", "4", "--set", "stop_on_eos=false"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: HFModel has no batch-invariant mode") == 1
    model, tokenizer = load(folder)
    for record, prompt in zip(sorted(lines(out), key=lambda r: r["line"]), ["hello there", "the cat sat"]):
        (want,) = generate(model, [tokenizer.encode_prompt(prompt)], seed=[record["seed"]], max_new_tokens=4,
                           stop_on_eos=False, tokenizer=tokenizer)
        assert record["tokens"] == want.tokens and record["text"] == want.text


def test_a_config_file_that_changed_under_its_name_is_refused(ckpt, tmp_path, one_torch_thread):
    config = tmp_path / "mine.yaml"
    config.write_text("chain: [{top_k: 5}, multinomial]\n")
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a", "config": str(config), "max_new_tokens": 2}) + "\n")
    out = tmp_path / "out.jsonl"
    assert run(ckpt, path, out).exit_code == 0
    config.write_text("chain: [{top_k: 6}, multinomial]\n")
    result = run(ckpt, path, out)
    assert result.exit_code == 2
    assert "(the requests' resolved settings (a config file they name changed?))" in result.stderr
