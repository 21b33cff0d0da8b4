"""``samplekit explain`` and ``generate(trace=...)`` from the command line: the step view, its JSON
lines and its picture."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.trace import StepTrace


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_explain_shows_every_stage_of_every_step():
    result = invoke("explain", "ROMEO:", "--config", "creative", "--steps", "3", "--top", "4")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("step ") >= 3
    for stage in ("model", "temperature", "top_k"):
        assert stage in result.stdout


def test_explain_json_is_one_trace_per_step_that_round_trips():
    result = invoke("explain", "ROMEO:", "--steps", "4", "--top", "3", "--json", "--seed", "2")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3]
    for line in lines:
        assert isinstance(line.pop("text"), str)
        for stage in line["stages"]:
            stage["top"] = [[t, p] for t, p, _ in stage["top"]]
        trace = StepTrace.from_dict(line)
        assert [s.name for s in trace.stages] == ["model", "temperature", "top_k"] and len(trace.stages[0].top) == 3


def test_explain_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    out = tmp_path / "explain.png"
    result = invoke("explain", "ROMEO:", "--steps", "3", "--plot", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(str(out)).shape[0] > 100


def test_explain_refuses_bad_input_in_one_line():
    result = invoke("explain", "ROMEO:", "--config", "no-such-preset")
    assert result.exit_code == 2 and result.output.count("error:") == 1
