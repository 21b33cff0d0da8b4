"""samplekit bench: the report's shape, the reference loops, the HF weight mapping. No timing
assertions: a benchmark is measured, never tested for speed."""

from __future__ import annotations

import importlib.util
import io
import json
import statistics

import pytest
import torch

from samplekit.bench import (PeakMemory, bare_cached_loop, chain_top_k, naive_loop, print_report,
                             run_bench)
from samplekit.chain import Chain
from samplekit.engine import generate
from samplekit.model.gpt import GPTModel, ModelConfig


def tiny(qkv_bias: bool = True) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(ModelConfig(vocab_size=64, context_length=32, emb_dim=32, n_heads=4, n_layers=1,
                                drop_rate=0.0, qkv_bias=qkv_bias)).eval()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models gain nothing from threads (see conftest.one_torch_thread)."""


def test_the_report_has_every_variant_and_ratio_per_batch_size():
    report = run_bench(tiny(), batch_sizes=(1, 3), prompt_tokens=4, new_tokens=5, compare=("naive",), repeats=2)
    assert [row["batch_size"] for row in report["batches"]] == [1, 3]
    for row in report["batches"]:
        for key in ("samplekit", "bare", "topk", "chain", "naive"):
            assert row[key]["seconds"] > 0 and len(row[key]["all_seconds"]) == 2
            assert row[key]["tokens_per_s"] == pytest.approx(row["batch_size"] * 5 / row[key]["seconds"])
        assert set(row["ratios"]) == {"overhead_vs_bare", "overhead_vs_bare_best", "topk_overhead_vs_bare",
                                      "chain_share", "speedup_vs_naive"}
        pairs = zip(row["samplekit"]["all_seconds"], row["bare"]["all_seconds"])
        assert row["ratios"]["overhead_vs_bare"] == pytest.approx(statistics.median(s / b - 1 for s, b in pairs))
    assert "candidates" in report["strategy"]  # the default chain samples among the top-k candidates
    json.dumps(report)  # the --json output
    out = io.StringIO()
    from rich.console import Console

    print_report(report, Console(file=out, width=120))
    assert "bare cached forward loop" in out.getvalue() and "speed-up over a plain loop without a cache" in out.getvalue()


def test_a_chain_without_top_k_has_no_top_k_floor():
    report = run_bench(tiny(), "greedy", batch_sizes=(1,), prompt_tokens=2, new_tokens=2, repeats=1)
    assert "topk" not in report["batches"][0] and "topk_overhead_vs_bare" not in report["batches"][0]["ratios"]


def test_the_top_k_floor_loop_picks_the_largest_logit_like_argmax():
    model = tiny()
    prompts = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(3))
    floor = bare_cached_loop(model, prompts, 6, lambda scores: scores.topk(7, dim=-1).indices[:, 0])
    assert torch.equal(floor, bare_cached_loop(model, prompts, 6))
    assert chain_top_k(Chain.from_names(("temperature", {"value": 0.5}), ("top_k", {"k": 7}), "multinomial"), 64) == 7
    assert chain_top_k(Chain.from_names(("top_k", {"k": 64}), "multinomial"), 64) is None  # k >= vocab: no-op


def test_bad_arguments_are_refused_with_a_message():
    with pytest.raises(ValueError, match="unknown comparison"):
        run_bench(tiny(), compare=("vllm",), new_tokens=2, prompt_tokens=2)
    with pytest.raises(ValueError, match="context_length"):
        run_bench(tiny(), new_tokens=40, prompt_tokens=2)


def test_the_bare_loop_is_the_engines_greedy_decoding():
    model = tiny()
    prompts = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    bare = bare_cached_loop(model, prompts, 6)
    results = generate(model, prompts, chain="greedy", max_new_tokens=6)
    assert bare.tolist() == [r.tokens for r in results]


def test_the_naive_loop_crops_to_the_context_and_appends_every_token():
    model = tiny()
    out = naive_loop(model, torch.tensor([[1, 2, 3]]), 40, 32, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 43) and out[0, :3].tolist() == [1, 2, 3]


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert peak.mib is not None and peak.mib > 30


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_the_hf_model_holds_the_same_weights(qkv_bias):
    pytest.importorskip("transformers")
    from samplekit.hf.export import to_hf_gpt2

    model = tiny(qkv_bias)
    hf = to_hf_gpt2(model)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=1e-4)


def test_hf_bare_loop_decodes_the_same_greedy_tokens_as_ours(recwarn):
    """The two floors the bench compares decode the same tokens from the same weights, and the
    HF loop passes its cache under the name this transformers expects (no deprecation warning)."""
    pytest.importorskip("transformers")
    from samplekit.bench import hf_bare_loop
    from samplekit.hf.export import to_hf_gpt2

    model = tiny()
    prompts = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(4))
    assert torch.equal(hf_bare_loop(to_hf_gpt2(model), prompts, 8), bare_cached_loop(model, prompts, 8))
    assert not [w for w in recwarn if "past_key_values" in str(w.message)]


def test_the_cli_prints_json_for_a_shape():
    from typer.testing import CliRunner

    from samplekit.cli import app

    result = CliRunner().invoke(app, ["bench", "--shape", "tiny", "-b", "1", "-n", "2", "--prompt-tokens", "2",
                                      "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"].startswith("tiny") and report["config"]["vocab_size"] == 4096


def test_the_cli_refuses_an_unknown_shape():
    from typer.testing import CliRunner

    from samplekit.cli import app

    result = CliRunner().invoke(app, ["bench", "--shape", "huge"])
    assert result.exit_code == 2 and "gpt2-small" in result.output


def test_the_ragged_workload_runs_every_variant_on_the_same_requests():
    """``bench --workload ragged``: the scheduler and the static batches serve the same seeded
    requests; with the batch-invariant forward the scheduler's useful tokens equal the static
    batches' (the same rows, the same seeds, ended at the same end-of-text or limit)."""
    from typer.testing import CliRunner

    from samplekit.cli import app

    result = CliRunner().invoke(app, ["bench", "--shape", "tiny", "--workload", "ragged", "--requests", "6",
                                      "-b", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    variants = report["variants"]
    assert {"scheduler", "static", "static, sorted"} <= set(variants) and report["requests"] == 6
    assert all(v["tokens"] > 0 and v["tokens_per_s"] > 0 for v in variants.values())
    assert variants["scheduler"]["tokens"] == variants["static, sorted"]["tokens"] == variants["static"]["tokens"]
    assert 0 < variants["scheduler"]["utilisation"] <= 1
    assert report["ratios"]["scheduler / static"] > 0


@pytest.mark.parametrize("args, message", [
    (["--workload", "zigzag"], "use one of 'ragged', 'open-ended'"),
    (["--workload", "ragged", "--option", "schema=x.json"], "--workload ragged takes no --option"),
    (["--option", "schema=x.json"], "name the workload"),
    (["--workload", "ragged", "-b", "1", "-b", "8"], "one --batch-size"),
    (["--workload", "ragged", "--compare", "hf"], "--workload ragged takes hf-batch"),
    (["--workload", "mixed-values", "--compare", "hf-batch"], "--workload mixed-values runs alone"),
])
def test_the_cli_refuses_a_bad_workload_request(args, message):
    from typer.testing import CliRunner

    from samplekit.cli import app

    result = CliRunner().invoke(app, ["bench", "--shape", "tiny", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs the hf extra (transformers)")
def test_the_ragged_workload_against_transformers_continuous_batching_times_wall_cpu_and_forward():
    """``--compare hf-batch``: the scheduler (on the GPTModel and on its transformers twin) and
    transformers' continuous batching serve the same requests; each variant reports wall, CPU and
    forward seconds, and the ratios are relative to transformers'. transformers runs the chain's
    equivalent processors (temperature 0.8, top-k 50 for the default chain)."""
    from typer.testing import CliRunner

    from samplekit.cli import app

    result = CliRunner().invoke(app, ["bench", "--shape", "tiny", "--workload", "ragged", "--compare", "hf-batch",
                                      "--requests", "4", "-b", "2", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    variants = report["variants"]
    assert set(variants) == {"scheduler", "scheduler, transformers model", "hf continuous batching"}
    assert report["base"] == "hf continuous batching" and report["repeats"] == 1
    for v in variants.values():
        assert v["tokens"] > 0 and v["seconds"] > 0 and v["cpu_seconds"] > 0
        assert 0 < v["forward_seconds"] <= v["seconds"] and v["forward_ms_per_token"] > 0
    # the scheduler on the twin and on the GPTModel serve the same seeded rows: the same useful tokens
    assert variants["scheduler"]["tokens"] == variants["scheduler, transformers model"]["tokens"]
    hf = variants["hf continuous batching"]
    assert hf["processors"] == ["TemperatureLogitsWarper", "TopKLogitsWarper"] and hf["hf_settings"]["exact"]
    assert set(report["ratios"]) == {f"{name} / hf continuous batching{cpu}" for cpu in ("", ", cpu")
                                     for name in ("scheduler", "scheduler, transformers model")}


def test_the_ragged_workload_on_a_missing_checkpoint_names_it():
    """Without --batch-size the workload takes 16 rows (not refused for bench's default of 1 and 8)."""
    from typer.testing import CliRunner

    from samplekit.cli import app

    result = CliRunner().invoke(app, ["bench", "--workload", "ragged", "--checkpoint", "/nonexistent/model.pt"])
    assert result.exit_code == 2 and "/nonexistent/model.pt" in result.output and "Traceback" not in result.output


def test_end_hazard_gives_end_of_text_probability_p_and_keeps_the_others_proportions():
    from samplekit.throughput import EndHazard

    scores = torch.tensor([[1.0, 2.0, float("-inf"), 0.5], [0.0, 0.0, 3.0, -1.0]])
    out = EndHazard(p=0.25, eos=3).process(None, scores, None)
    probs = out.softmax(-1)
    assert torch.allclose(probs[:, 3], torch.tensor([0.25, 0.25]))
    before = scores[:, :3].softmax(-1)
    assert torch.allclose(probs[:, :3] / probs[:, :3].sum(-1, keepdim=True), before)


def test_the_open_ended_workload_gives_every_request_the_longest_limit_and_ends_rows_at_end_of_text():
    from typer.testing import CliRunner

    from samplekit.cli import app

    result = CliRunner().invoke(app, ["bench", "--shape", "tiny", "--workload", "open-ended", "--requests", "6",
                                      "-b", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["workload"] == "open-ended" and "hf static" not in report["variants"]
    assert any("EndHazard" in p for p in report["chain"])
    tokens = {v["tokens"] for v in report["variants"].values()}
    assert len(tokens) == 1 and 0 < tokens.pop() < 6 * 205  # rows ended at end-of-text, before the limit


# -- benchmarks from plugins (the register_benchmarks hook) ----------------------------------------------

def _echo_benchmark(name: str = "echo"):
    from samplekit.bench import Benchmark

    def run(settings):
        settings.progress("echoing")
        return {"options": settings.options, "batch_sizes": list(settings.batch_sizes), "requests": settings.requests}

    return Benchmark(name, "returns its settings", run, lambda report, console=None: print("shown", report),
                     options={"n": "a number"}, batch_sizes=(2,))


def test_a_plugins_benchmark_runs_through_bench_workload_with_its_options(fresh_plugins, monkeypatch):
    from typer.testing import CliRunner

    from samplekit import hookimpl
    from samplekit.cli import app

    class Plugin:
        @hookimpl
        def register_benchmarks(self, register):
            register(_echo_benchmark())

    fresh_plugins.default_host().add(Plugin(), name="echo-plugin")
    result = CliRunner().invoke(app, ["bench", "--workload", "echo", "--option", "n=3", "--requests", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"options": {"n": "3"}, "batch_sizes": [2], "requests": 5}
    shown = CliRunner().invoke(app, ["bench", "--workload", "echo", "-b", "4", "-b", "6"])
    assert shown.exit_code == 0 and "shown" in shown.output and "echoing" in shown.output, shown.output
    bad = CliRunner().invoke(app, ["bench", "--workload", "echo", "--option", "m=1"])
    assert bad.exit_code == 2 and "takes n (a number)" in bad.output


def test_a_benchmark_name_registered_twice_is_refused_naming_the_first_owner():
    from samplekit import hookimpl
    from samplekit.plugins import PluginHost, PluginLoadWarning

    class Clash:
        @hookimpl
        def register_benchmarks(self, register):
            register(_echo_benchmark("ragged"))

    class NotABenchmark:
        @hookimpl
        def register_benchmarks(self, register):
            register(object())

    host = PluginHost(autoload=False)
    host.add(Clash(), name="clash")
    host.add(NotABenchmark(), name="odd")
    with pytest.warns(PluginLoadWarning) as warned:
        found = host.build_benchmarks()
    messages = " | ".join(str(w.message) for w in warned)
    assert "'ragged' is already registered by plugin 'samplekit.bench.workloads'" in messages
    assert "odd" in messages and "takes samplekit.bench.Benchmark objects, got object" in messages
    assert found["ragged"].summary != "returns its settings"  # the built-in keeps its name


def test_a_benchmark_name_must_be_a_command_line_word():
    with pytest.raises(ValueError, match="lowercase letters"):
        _echo_benchmark("Has Space")
