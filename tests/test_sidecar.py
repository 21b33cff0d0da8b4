"""Checkpoint sidecars: metadata beside the weights, so re-evaluating never rewrites them."""

from __future__ import annotations

import fnmatch
import hashlib
import json

import pytest
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.demo import DEMO_CHECKPOINT, DEMO_SIDECAR
from samplekit.demo.evaluate import write_evaluation
from samplekit.errors import CheckpointError
from samplekit.model.checkpoint import load_checkpoint
from samplekit.model.sidecar import read_sidecar, sidecar_path, update_sidecar
from tests.helpers_models import make_tiny_checkpoint, refused


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sidecar_metadata_is_merged_and_wins_over_the_checkpoints(tmp_path):
    path = make_tiny_checkpoint(tmp_path, corpus="tiny")  # val_loss 2.75 inside the .pt
    before = _digest(path)
    written = update_sidecar(path, evaluation={"word_rate": 0.9}, val_loss=1.5, corpus="re-measured")
    assert written == tmp_path / "tiny.json" == sidecar_path(path)
    assert _digest(path) == before  # the weights file is untouched
    _, info = load_checkpoint(path)
    assert info.val_loss == 1.5 and info.train_loss == 2.5  # the sidecar's, and the .pt's own
    assert info.extra["evaluation"] == {"word_rate": 0.9} and info.extra["corpus"] == "re-measured"
    assert "sidecar_for" not in info.extra and info.sidecar == written


def test_update_sidecar_keeps_earlier_entries_and_replaces_named_ones(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    update_sidecar(path, evaluation={"a": 1}, notes="x")
    update_sidecar(path, evaluation={"a": 2})
    assert json.loads(sidecar_path(path).read_text()) == {"sidecar_for": "tiny.pt", "evaluation": {"a": 2},
                                                         "notes": "x"}


def test_a_json_file_that_is_not_a_sidecar_is_left_alone(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    sidecar_path(path).write_text('{"lr": 3e-4, "val_loss": "not ours"}')
    _, info = load_checkpoint(path)
    assert info.val_loss == 2.75 and "lr" not in info.extra and info.sidecar is None


@pytest.mark.parametrize("content, expected", [
    ('{"sidecar_for": "other.pt", "val_loss": 1}', "'sidecar_for' is 'other.pt', but this sidecar sits beside tiny.pt"),
    ('{"sidecar_for": "tiny.pt", "config": {"emb_dim": 8}}', "a sidecar cannot set config"),
    ('{"sidecar_for": "tiny.pt", "val_loss": "low"}', "'val_loss' must be a number, found 'low'"),
    ('{"sidecar_for": "tiny.pt",', "invalid JSON"),
    ('{"sidecar_for": "tiny.pt", "val_loss": NaN}', "NaN"),
])
def test_a_bad_sidecar_is_one_line_naming_it(tmp_path, content, expected):
    path = make_tiny_checkpoint(tmp_path)
    sidecar_path(path).write_text(content)
    message = refused(load_checkpoint, path)
    assert message.startswith(str(sidecar_path(path))) and expected in message


def test_update_sidecar_refuses_keys_it_cannot_hold(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="model_state_dict cannot be set in a sidecar"):
        update_sidecar(path, model_state_dict={})
    assert not sidecar_path(path).exists()


def test_write_evaluation_writes_the_sidecar_and_never_the_checkpoint(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    before = _digest(path)
    written = write_evaluation(path, {"val_loss": 2.0, "word_rate": 0.5})
    assert _digest(path) == before
    assert read_sidecar(path) == {"evaluation": {"val_loss": 2.0, "word_rate": 0.5}} and written == sidecar_path(path)


def test_the_demo_sidecar_is_where_the_demo_evaluation_comes_from():
    data = json.loads(DEMO_SIDECAR.read_text(encoding="utf-8"))
    assert data["sidecar_for"] == DEMO_CHECKPOINT.name and sidecar_path(DEMO_CHECKPOINT) == DEMO_SIDECAR
    _, info = load_checkpoint("demo")
    assert info.sidecar == DEMO_SIDECAR and info.extra["evaluation"] == data["evaluation"]
    shown = json.loads(CliRunner().invoke(app, ["info", "demo", "--json"]).stdout)
    assert shown["metadata"]["evaluation"] == data["evaluation"]
    assert {"training", "corpus", "evaluation"} <= set(shown["metadata"])


def test_the_package_data_ships_the_demo_sidecar():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["samplekit.demo"]
    assert any(fnmatch.fnmatch(f"data/{DEMO_SIDECAR.name}", p) for p in patterns), patterns
