"""The bundled demo model through samplekit's own front doors (CLI, load_checkpoint, engine),
with every socket connection refused: it works offline straight after install."""

from __future__ import annotations

import re
import socket

import pytest
import torch
from typer.testing import CliRunner

import samplekit
from samplekit.cli import app
from samplekit.config import preset_names
from samplekit.demo import DEMO_VOCABULARY


def _refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 decoding is overhead-bound
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_generates_text_from_the_demo_model_offline(preset):
    result = CliRunner().invoke(app, ["generate", "ROMEO:", "--config", preset, "--length", "24", "--seed", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ROMEO:")
    assert len(re.findall(r"[A-Za-z]+", result.stdout)) >= 8, result.stdout


def test_generate_without_a_checkpoint_uses_the_demo_model():
    runner = CliRunner()
    implicit = runner.invoke(app, ["generate", "ROMEO:", "--length", "16", "--seed", "3"])
    explicit = runner.invoke(app, ["generate", "ROMEO:", "--checkpoint", "demo", "--length", "16", "--seed", "3"])
    assert implicit.exit_code == 0 and explicit.exit_code == 0, implicit.output + explicit.output
    assert implicit.stdout == explicit.stdout


def test_engine_samples_at_the_balanced_preset_are_mostly_corpus_words():
    """At least 85% of alphabetic words the engine writes (balanced preset, fixed seeds) are corpus words."""
    model, info = samplekit.load_checkpoint("demo")
    enc = samplekit.load_tokenizer(info.tokenizer, base_dir=info.path.parent)
    vocabulary = set(DEMO_VOCABULARY.read_text(encoding="utf-8").split())
    prompts = [enc.encode(p) for p in ("ROMEO:", "JULIET:", "KING HENRY:", "HAMLET:")]
    results = samplekit.generate(model, prompts, chain="balanced", max_new_tokens=60, seed=[0, 1, 2, 3],
                                 tokenizer=enc)
    words = [w.lower() for r in results for w in re.findall(r"[A-Za-z]+", r.text)]
    assert len(words) >= 100
    rate = sum(w in vocabulary for w in words) / len(words)
    assert rate >= 0.85, f"{rate:.1%} corpus words: {words[:40]}"


def test_info_demo_shows_config_size_losses_and_corpus():
    result = CliRunner().invoke(app, ["info", "demo"])
    assert result.exit_code == 0, result.output
    for fragment in ("5,319,168", "vocab_size=4096", "val loss", "train loss", "shakespeare", "unigram_val_loss"):
        assert fragment in result.stdout, fragment
