"""``samplekit bench --workload chain-only``: the chain alone, per strategy (no speed is asserted)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from samplekit.bench import BenchSettings
from samplekit.bench import chain_only
from samplekit.chain import Chain
from samplekit.cli import app


@pytest.fixture(autouse=True)
def short(monkeypatch):
    monkeypatch.setattr(chain_only, "TARGET_SECONDS", 0.001)


def test_the_report_has_every_chain_vocabulary_batch_and_variant():
    report = chain_only.run_chain_only(BenchSettings(batch_sizes=(1, 3), repeats=1, options={"vocab": "300,700"}))
    seen = {(r["chain"], r["vocab"], r["batch"]) for r in report["rows"]}
    assert seen == {(c, v, b) for c in chain_only.CHAINS for v in (300, 700) for b in (1, 3)}
    for row in report["rows"]:
        assert set(row["us_per_row"]) == set(chain_only.VARIANTS) and all(t > 0 for t in row["us_per_row"].values())
        assert row["builtin_strategy"] == "top-k candidates"  # samplekit's own, whatever plugins are installed
    assert report["load_before"]["cores"] >= 1


def test_the_builtin_strategy_bypasses_plugins():
    chain = Chain.from_names(*chain_only.CHAINS["llama.cpp"])
    assert type(chain_only.builtin_strategy(chain)).__module__ == "samplekit.strategies.top_k"
    dense_only = Chain.from_names(("temperature", {"value": 0.8}), "multinomial")
    assert chain_only.builtin_strategy(dense_only).name == "dense"


def test_a_config_measures_that_chain_alone():
    report = chain_only.run_chain_only(BenchSettings(config="greedy", batch_sizes=(2,), repeats=1,
                                                     options={"vocab": "100"}))
    assert [r["chain"] for r in report["rows"]] == ["--config"]


@pytest.mark.parametrize("vocab", ["x", "1", "", "50257,0"])
def test_a_bad_vocabulary_is_refused_naming_the_option(vocab):
    with pytest.raises(ValueError, match="--option vocab="):
        chain_only.run_chain_only(BenchSettings(repeats=1, options={"vocab": vocab}))


def test_the_command_prints_json_and_refuses_an_unknown_option():
    result = CliRunner().invoke(app, ["bench", "--workload", "chain-only", "-b", "1", "--repeats", "1",
                                      "--option", "vocab=200", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert {r["vocab"] for r in report["rows"]} == {200}
    bad = CliRunner().invoke(app, ["bench", "--workload", "chain-only", "--option", "width=3"])
    assert bad.exit_code == 2 and "vocab" in bad.output, bad.output
