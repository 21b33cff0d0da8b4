"""Every option that reads a text file refuses what is not a regular file, a file past its
bound, and JSON nested past MAX_DEPTH: one `error:` line naming the file (and line), exit 2,
before anything is loaded or allocated."""

from __future__ import annotations

import json
import os
import signal

import pytest
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.safe_io import MAX_DEPTH, nesting_depth
from tests.cli_assertions import assert_one_error_line, time_limit
from tests.helpers_models import make_tiny_checkpoint

runner = CliRunner()


@pytest.fixture
def never_hang():
    """A FIFO read would block forever: fail instead after 30 s."""
    with time_limit(30, "the command reading a FIFO or device (blocked on its input?)"):
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def special_files(folder) -> list[tuple[str, str]]:
    """(path, what the error says) for a FIFO and /dev/zero, where this system has them."""
    found = []
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo")
        found.append((str(folder / "fifo"), "FIFO"))
    if os.path.exists("/dev/zero"):
        found.append(("/dev/zero", "a device"))
    return found


COMMANDS = {
    "record --text": lambda tiny, path, tmp: ["record", "--text", path, "-o", str(tmp / "r.pt"), "-c", tiny,
                                              "--device", "cpu"],
    "compare --prompts": lambda tiny, path, tmp: ["compare", "greedy", "--prompts", path, "-c", tiny,
                                                  "--samples", "1", "--length", "1", "--device", "cpu"],
    "run": lambda tiny, path, tmp: ["run", path, "-o", str(tmp / "out.jsonl"), "-c", tiny, "--device", "cpu",
                                    "--quiet"],
    "generate --prompt-file": lambda tiny, path, tmp: ["generate", "--prompt-file", path, "-c", tiny,
                                                       "--device", "cpu"],
}


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM to bound the time")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_text_file_option_refuses_fifos_and_devices_with_one_error_line(command, tiny, tmp_path,
                                                                             never_hang):
    specials = special_files(tmp_path)
    if not specials:
        pytest.skip("no FIFO or /dev/zero here")
    for path, kind in specials:
        assert_one_error_line(runner.invoke(app, COMMANDS[command](tiny, path, tmp_path)), path, kind,
                              "expected a regular file")
    assert not (tmp_path / "r.pt").exists() and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("command, limit", [("record --text", "16 MiB"), ("compare --prompts", "16 MiB"),
                                            ("generate --prompt-file", "1 MiB")])
def test_every_text_file_option_refuses_a_file_past_its_size_bound_before_reading_it(command, limit, tiny,
                                                                                     tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(17 << 20)  # sparse: 17 MiB of zeros, no disk used
    assert_one_error_line(runner.invoke(app, COMMANDS[command](tiny, str(big), tmp_path)), str(big),
                          f"the limit is {limit}")


@pytest.mark.parametrize("command", ["record --text", "compare --prompts"])
def test_every_text_file_option_refuses_invalid_utf8_naming_the_line(command, tiny, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nnot \xff fine\n")
    assert_one_error_line(runner.invoke(app, COMMANDS[command](tiny, str(bad), tmp_path)), str(bad),
                          "not valid UTF-8", "line 2")


def nested(depth: int):
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_run_line_nested_too_deep_is_refused_naming_the_file_and_the_line(tiny, tmp_path):
    requests = tmp_path / "deep.jsonl"
    requests.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "x", "config": nested(600)})
                        + "\n")
    assert_one_error_line(runner.invoke(app, COMMANDS["run"](tiny, str(requests), tmp_path)),
                          f"{requests}: line 2", f"nested more than {MAX_DEPTH} deep")


def test_a_prompts_line_nested_too_deep_is_refused_naming_the_file_and_the_line(tiny, tmp_path):
    prompts = tmp_path / "deep.jsonl"
    prompts.write_text('{"prompt": "a", "continuation": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert_one_error_line(runner.invoke(app, COMMANDS["compare --prompts"](tiny, str(prompts), tmp_path)),
                          str(prompts), "line 1", "nested")


@pytest.mark.parametrize("depth", [0, 1, 2, 64, 65, 5000])
def test_nesting_depth_counts_lists_and_dicts_without_recursion(depth):
    value = nested(depth) if depth else "scalar"
    assert nesting_depth(value) == depth
    assert nesting_depth({"a": [1, {"b": []}], "c": 2}) == 4  # dict, list, dict, list


def test_bench_repeats_has_an_upper_bound():
    result = runner.invoke(app, ["bench", "--repeats", "99999999999999999999999"])
    assert_one_error_line(result, "--repeats")
