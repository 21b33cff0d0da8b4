"""Models the commands refuse in one line: a ``--model`` path that is not there (no Hub download
advice for a path), and a model or tokenizer with fewer than two tokens to choose between."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.hf.load import looks_like_repo_id

runner = CliRunner()


def one_error_line(result, *fragments: str) -> str:
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("path", ["./nosuch", "../nosuch", "nosuch", "/tmp/no/such", "a/b/c", "~/nosuch"])
def test_a_missing_model_path_is_no_such_folder_without_download_advice(path):
    line = one_error_line(runner.invoke(app, ["generate", "x", "--model", path]), f"--model {path}: no such folder")
    assert "hf download" not in line


def test_a_missing_hub_style_id_says_to_download_it_first():
    one_error_line(runner.invoke(app, ["generate", "x", "--model", "someone/no-such-model"]),
                   "hf download someone/no-such-model --local-dir DIR")


@pytest.mark.parametrize("text, repo", [("gpt2", False), ("openai-community/gpt2", True), ("./a/b", False),
                                         ("a/b/c", False), ("org/../x", False), ("/org/x", False)])
def test_what_reads_as_a_hub_id(text, repo):
    assert looks_like_repo_id(text) is repo


def test_a_checkpoint_with_a_one_token_vocabulary_is_refused(tmp_path):
    from samplekit.model.gpt import GPTModel, ModelConfig

    config = dict(vocab_size=1, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=False)
    path = tmp_path / "one.pt"
    torch.save({"model_state_dict": GPTModel(ModelConfig(**config)).state_dict(), "config": config}, path)
    result = runner.invoke(app, ["generate", "x", "--checkpoint", str(path), "--device", "cpu", "-n", "3"])
    one_error_line(result, "has 1 token", "at least 2")
    assert result.stdout == ""


def test_a_model_folder_whose_tokenizer_has_one_token_is_refused(tmp_path):
    pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from tests.hf_fixtures import model_folder

    only_eos = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"</s>": 0}, unk_token="</s>")),
                                       unk_token="</s>", eos_token="</s>")
    folder = model_folder(tmp_path, "llama", tokenizer=only_eos, name="eos-only")
    result = runner.invoke(app, ["generate", "hello", "--model", str(folder), "--device", "cpu", "-n", "3"])
    one_error_line(result, "has 1 token", "at least 2")
