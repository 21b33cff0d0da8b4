"""`samplekit bench --workload constrained`, registered by this plugin through samplekit's
``register_benchmarks`` hook, runs (a smoke test: benchmarks are never timed in tests)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from samplekit.cli import app
from samplekit_grammar.bench import BENCH_SCHEMA, run_constrained_bench


def test_the_constrained_bench_pairs_both_chains_on_the_demo_model():
    report = run_constrained_bench("demo", batch_sizes=(1, 2), prompt_tokens=4, new_tokens=6, repeats=1)
    assert [row["batch_size"] for row in report["batches"]] == [1, 2]
    for row in report["batches"]:
        assert row["constrained"]["steps"] == row["unconstrained"]["steps"] == 6  # the schema never completes
        assert row["complete_rows"] == 0 and row["ratio"] > 0
    assert BENCH_SCHEMA["minItems"] * 2 > 6


def test_the_command_line_prints_the_report_as_json_and_refuses_a_bad_schema(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--workload", "constrained", "-b", "1", "-n", "3", "--repeats", "1",
                                 "--prompt-tokens", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["batches"][0]["constrained"]["steps"] == 3
    schema = tmp_path / "bad.json"
    schema.write_text('{"type": "nope"}')
    bad = runner.invoke(app, ["bench", "--workload", "constrained", "--option", f"schema={schema}", "-n", "2",
                              "--repeats", "1"])
    assert bad.exit_code == 2 and "Invalid type: nope" in bad.output and "Traceback" not in bad.output
    unknown = runner.invoke(app, ["bench", "--workload", "constrained", "--option", "scheme=x.json"])
    assert unknown.exit_code == 2 and "takes schema" in unknown.output


def test_the_plugin_registers_the_constrained_benchmark_and_the_core_does_not_name_it():
    """The core's benchmarks know no plugin: "constrained" comes from this plugin's hook."""
    from pathlib import Path

    import samplekit
    from samplekit.plugins import PluginHost

    host = PluginHost(autoload=True)
    assert host.build_benchmarks()["constrained"].options.keys() == {"schema"}
    assert "constrained" not in PluginHost(autoload=False).build_benchmarks()
    core = Path(samplekit.__file__).parent
    benchmarks = [*(core / "bench").rglob("*.py"), core / "cli" / "bench.py"]
    assert not [p for p in benchmarks if "json_schema" in p.read_text(encoding="utf-8")]
