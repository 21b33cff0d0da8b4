"""``bench --compare hf`` is like for like: transformers' generate runs with the chain's equivalent
settings (samplekit.bench.hf_settings), or the report says what has no equivalent and names the
nearest settings it timed. No timing assertions."""

from __future__ import annotations

import io
import json

import pytest
import torch

from samplekit import Chain
from samplekit.bench import hf_settings


def settings(*specs):
    return hf_settings(Chain.from_names(*specs))


@pytest.mark.parametrize("specs, kwargs", [
    ([("temperature", {"value": 0.8}), ("top_k", {"k": 50}), "multinomial"],
     {"do_sample": True, "temperature": 0.8, "top_k": 50}),
    ([("top_k", {"k": 40}), ("temperature", {"value": 0.7}), "multinomial"],  # they commute
     {"do_sample": True, "top_k": 40, "temperature": 0.7}),
    ([("temperature", {"value": 0.9}), ("top_p", {"p": 0.95}), ("min_p", {"p": 0.05}), "multinomial"],
     {"do_sample": True, "temperature": 0.9, "top_p": 0.95, "min_p": 0.05}),
    ([("typical_p", {"mass": 0.8}), ("epsilon_cutoff", {"epsilon": 0.001}), ("eta_cutoff", {"epsilon": 0.002}),
      "multinomial"], {"do_sample": True, "typical_p": 0.8, "epsilon_cutoff": 0.001, "eta_cutoff": 0.002}),
    ([("repetition_penalty", {"penalty": 1.3}), ("no_repeat_ngram", {"size": 2}), ("temperature", {"value": 0.5}),
      "multinomial"], {"do_sample": True, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "temperature": 0.5}),
    ([("logit_bias", {"bias": {7: 2.0}}), ("banned_tokens", {"tokens": [3, 4]}), "greedy"],
     {"do_sample": False, "sequence_bias": {(7,): 2.0}, "bad_words_ids": [[3], [4]]}),
    ([("temperature", {"value": 0.7}), ("top_k", {"k": 5}), "greedy"], {"do_sample": False}),  # keep the argmax
    ([("temperature", {"value": 0.0}), ("top_k", {"k": 5}), "multinomial"], {"do_sample": False}),  # T = 0: greedy
    ([("temperature", {"value": 1.0}), ("presence_penalty", {"penalty": 0.0}), "multinomial"],
     {"do_sample": True}),  # neutral values: nothing to set
], ids=["temperature-top_k", "top_k-temperature", "top_p-min_p", "typical-epsilon-eta", "penalties", "bias-greedy",
        "warpers-before-greedy", "temperature-0", "neutral"])
def test_a_chain_generate_has_maps_to_its_keywords_exactly(specs, kwargs):
    found = settings(*specs)
    assert found.kwargs == kwargs and found.exact and found.notes == []


@pytest.mark.parametrize("specs, note", [
    ([("presence_penalty", {"penalty": 0.5}), "multinomial"], "presence_penalty has no equivalent"),
    ([("top_n_sigma", {"n": 1.0}), "multinomial"], "top_n_sigma has no equivalent"),
    (["mirostat"], "the selector mirostat has no equivalent"),
    ([("top_p", {"p": 0.9}), ("temperature", {"value": 0.5}), "multinomial"],
     "generate applies temperature before top_p"),
    ([("typical_p", {"mass": 0.5}), "greedy"], "typical_p before greedy"),
    ([("repetition_penalty", {"penalty": 1.2, "scope": "generated"}), "multinomial"], "scope 'generated'"),
    ([("top_p", {"p": 0.9, "min_tokens_to_keep": 3}), "multinomial"], "min_tokens_to_keep 3"),
    ([("temperature", {"value": 0.5}), ("temperature", {"value": 0.9}), "multinomial"], "appears twice"),
    ([("context_window", {"context_length": 16}), "multinomial"], "context_window has no equivalent"),
])
def test_a_chain_without_an_equivalent_says_what_differs(specs, note):
    found = settings(*specs)
    assert not found.exact and any(note in n for n in found.notes), found.notes
    assert found.kwargs["do_sample"] is (specs[-1] != "greedy")


def test_the_nearest_settings_keep_what_has_an_equivalent():
    found = settings(("presence_penalty", {"penalty": 0.5}), ("top_k", {"k": 20}), ("temperature", {"value": 0.6}),
                     "multinomial")
    assert found.kwargs == {"do_sample": True, "top_k": 20, "temperature": 0.6} and not found.exact
    assert json.loads(json.dumps(settings(("logit_bias", {"bias": {5: 1.5}}), "greedy").to_dict()))["generate"] == \
        {"do_sample": False, "sequence_bias": {"(5,)": 1.5}}


# -- the mapping against transformers itself ------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     eos_token_id=3, bos_token_id=3, pad_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("specs", [
    [("temperature", {"value": 0.7}), ("top_k", {"k": 10}), ("top_p", {"p": 0.9}), "multinomial"],
    [("repetition_penalty", {"penalty": 1.5}), ("no_repeat_ngram", {"size": 2}), "greedy"],
    [("logit_bias", {"bias": {9: 3.0}}), ("banned_tokens", {"tokens": [11]}), ("min_p", {"p": 0.1}), "multinomial"],
], ids=["warpers", "penalties-greedy", "bias-ban-min_p"])
def test_generate_with_the_mapped_keywords_draws_what_it_draws_with_the_chain_inside(gpt2, specs):
    """The mapping means what it says: from the same seed, generate with the mapped keywords gives
    the tokens generate gives with the chain's own processors inside it (its warpers off)."""
    from transformers import LogitsProcessorList

    from samplekit.hf import logits_processor

    chain = Chain.from_names(*specs)
    found = hf_settings(chain)
    assert found.exact
    ids = torch.tensor([[5, 6, 7, 5, 6], [8, 9, 10, 11, 12]])

    def run(**options):
        torch.manual_seed(0)
        neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
        out = gpt2.generate(ids, max_new_tokens=10, eos_token_id=3, pad_token_id=0, **{**neutral, **options})
        return out[:, ids.shape[1]:].tolist()

    inside = run(do_sample=found.kwargs["do_sample"], logits_processor=LogitsProcessorList([logits_processor(chain)]))
    assert run(**found.kwargs) == inside


def test_bench_compare_hf_on_a_saved_model_reports_the_settings_it_timed(tmp_path):
    """End to end on a tiny random model saved to disk: --compare hf runs generate with the
    chain's settings and says so; a chain without an equivalent gets a note naming the nearest."""
    pytest.importorskip("transformers")
    from typer.testing import CliRunner

    from samplekit.cli import app
    from tests.hf_fixtures import model_folder

    folder = model_folder(tmp_path, "gpt2", vocab=120)
    config = tmp_path / "chain.yaml"
    config.write_text("chain:\n  - temperature: 0.7\n  - top_p: 0.9\n  - multinomial\n")
    args = ["bench", "--model", str(folder), "-b", "1", "-n", "3", "--prompt-tokens", "2", "--repeats", "1",
            "--compare", "hf", "--json"]
    result = CliRunner().invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["hf_settings"] == {"generate": {"do_sample": True, "temperature": 0.7, "top_p": 0.9},
                                     "exact": True, "notes": []}
    assert "hf" in report["batches"][0] and "notes" not in report
    from rich.console import Console

    from samplekit.bench import print_report, run_bench
    from samplekit.hf import load_model

    report = run_bench(load_model(folder), Chain.from_names(("presence_penalty", {"penalty": 0.4}), ("top_k", {"k": 20}),
                                                            "multinomial"),
                       batch_sizes=(1,), prompt_tokens=2, new_tokens=3, repeats=1, compare=("hf",), chain_vs_hf=False)
    assert not report["hf_settings"]["exact"]
    assert any("presence_penalty has no equivalent" in n and "do_sample=True, top_k=20" in n for n in report["notes"])
    out = Console(file=io.StringIO(), width=300)
    print_report(report, out)
    assert "presence_penalty has no equivalent" in out.file.getvalue()
