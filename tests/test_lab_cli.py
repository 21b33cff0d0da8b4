"""`samplekit compare` and `samplekit record`: end to end on the demo model, one-line errors."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from samplekit.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def needs(module: str, extra: str) -> None:
    pytest.importorskip(module, reason=f"{module} (samplekit-lm[{extra}]) is not installed")


def assert_one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def test_compare_end_to_end_on_the_demo_model(tmp_path):
    needs("nltk", "lab")
    needs("matplotlib", "plot")
    png = tmp_path / "compare.png"
    result = run("compare", "creative", "greedy", "--samples", "4", "--length", "16", "--json",
                 "--plot", str(png), "--device", "cpu")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["rows"]}
    assert list(rows) == ["creative", "greedy", "human"]
    assert rows["greedy"]["perplexity"] < rows["creative"]["perplexity"]  # greedy text is the model's likeliest
    assert rows["human"]["seconds_per_sample"] is None and rows["creative"]["seconds_per_sample"] > 0
    assert all(0 < row["mean_length"] <= 16 and 0 <= row["self_bleu4"] <= 1 for row in rows.values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_prints_a_table_with_a_row_per_chain(tmp_path):
    needs("nltk", "lab")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ROMEO:\nJULIET:\n")
    result = run("compare", "balanced", "--prompts", str(prompts), "--samples", "3", "--length", "8",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "balanced" in result.stdout and "Self-BLEU-4" in result.stdout
    progress = [line for line in result.stderr.splitlines() if line.startswith("... 1/1 balanced: ")]
    assert len(progress) == 2 and progress[-1].endswith(" s"), result.stderr  # its start, then its end
    assert "human" not in result.stdout  # plain prompts have no human continuation


def test_record_then_replay_without_the_model(tmp_path):
    needs("matplotlib", "plot")
    out, png = tmp_path / "run.logits", tmp_path / "tradeoff.png"
    result = run("record", "--corpus", "demo-heldout", "--samples", "3", "--length", "12", "-o", str(out),
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "recorded 36 positions" in result.stdout
    result = run("compare", "creative", "factual", "--logits", str(out), "--json", "--plot", str(png))
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["creative"]["support"] == 100 and rows["factual"]["support"] == 25
    assert rows["model"]["coverage"] == 1 and rows["factual"]["coverage"] <= rows["creative"]["coverage"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_record_a_text_file(tmp_path):
    text = tmp_path / "heldout.txt"
    text.write_text("To be, or not to be, that is the question:\n" * 8)
    out = tmp_path / "text.logits"
    result = run("record", "--text", str(text), "-o", str(out), "--top", "64", "--prompt-tokens", "8",
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    replayed = run("compare", "factual", "--logits", str(out))
    assert replayed.exit_code == 0, replayed.output
    assert "factual" in replayed.stdout and "top 64 of 4096" in replayed.stdout


def test_unknown_chain_is_one_error_line():
    assert_one_error_line(run("compare", "no-such-preset", "--samples", "2"), "no-such-preset", "preset")


def test_unreadable_prompt_file_is_one_error_line(tmp_path):
    assert_one_error_line(run("compare", "creative", "--prompts", str(tmp_path / "missing.txt")),
                          "--prompts", "missing.txt")
    assert_one_error_line(run("compare", "creative", "--prompts", str(tmp_path)), "--prompts")


def test_more_samples_than_the_corpus_holds_is_one_error_line():
    assert_one_error_line(run("compare", "creative", "--samples", "100000", "--device", "cpu"),
                          "--samples 100000", "256")


def test_missing_nltk_names_the_lab_extra(monkeypatch):
    for name in ("nltk", "nltk.translate", "nltk.translate.bleu_score"):
        monkeypatch.setitem(sys.modules, name, None)
    assert_one_error_line(run("compare", "creative", "--samples", "2"), "Self-BLEU", "samplekit-lm[lab]")


def test_missing_matplotlib_names_the_plot_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert_one_error_line(run("compare", "creative", "--plot", str(tmp_path / "x.png")),
                          "--plot", "samplekit-lm[plot]")


def test_bad_logits_file_and_options_that_do_not_apply_are_one_error_line(tmp_path):
    junk = tmp_path / "junk.logits"
    junk.write_text("hello")
    assert_one_error_line(run("compare", "creative", "--logits", str(junk)), "not a samplekit logits record")
    assert_one_error_line(run("compare", "creative", "--logits", str(junk), "--samples", "3"),
                          "--samples", "not used with --logits")
    assert_one_error_line(run("record", "-o", str(tmp_path / "x.logits")), "--text", "--corpus")
