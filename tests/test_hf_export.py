"""`samplekit export demo --to-hf OUT`: the demo model comes back identical through samplekit.hf.load."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import samplekit  # noqa: E402
from samplekit.cli import app  # noqa: E402
from samplekit.hf import load  # noqa: E402
from samplekit.hf.export import gpt2_vocab_and_merges  # noqa: E402
from samplekit.model.checkpoint import load_checkpoint  # noqa: E402
from samplekit.model.tokenizer import tokenizer_for_checkpoint  # noqa: E402
from tests.hf_fixtures import gpt2_cache_files  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SAMPLE = ("ROMEO: But soft, what light through yonder window breaks?\n\n  JULIET:\tO Romeo! 42 l'amour, "
          "héllo wörld 🙂 <|endoftext|>Enter the Nurse.\n")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "demo-hf"
    result = CliRunner().invoke(app, ["export", "demo", "--to-hf", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    return out


@pytest.fixture(scope="module")
def demo():
    model, info = load_checkpoint("demo")
    return model, tokenizer_for_checkpoint(info)


def test_the_folder_holds_weights_config_and_gpt2_tokenizer_files(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt",
            "tokenizer.json", "tokenizer_config.json"} <= names
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert type(AutoModelForCausalLM.from_pretrained(exported)).__name__ == "GPT2LMHeadModel"
    assert AutoTokenizer.from_pretrained(exported).eos_token == "<|endoftext|>"


def test_the_exported_model_gives_the_same_logits_and_greedy_tokens(exported, demo):
    model, tok = load(exported)
    ours, enc = demo
    ids = torch.tensor([enc.encode(SAMPLE * 3, allowed_special="all")[:200]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), ours(ids), atol=1e-5, rtol=1e-5)
    prompts = [enc.encode("ROMEO:"), enc.encode("JULIET: O")]
    run = dict(chain="greedy", max_new_tokens=40, stop_on_eos=False)
    assert ([r.tokens for r in samplekit.generate(model, prompts, tokenizer=tok, **run)]
            == [r.tokens for r in samplekit.generate(ours, prompts, tokenizer=enc, **run)])
    assert model.eos_token_ids == tok.eos_token_ids == (enc.eot_token,)


def test_the_exported_tokenizer_encodes_and_decodes_like_the_demos(exported, demo):
    _, tok = load(exported)
    _, enc = demo
    from samplekit.demo import DEMO_VOCABULARY

    text = SAMPLE + DEMO_VOCABULARY.read_text(encoding="utf-8")[:20000]
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode(text) == enc.encode(text, disallowed_special=())
    assert all(tok.decode_single_token_bytes(i) == enc.decode_single_token_bytes(i) for i in range(enc.n_vocab))


def test_an_export_never_overwrites_a_folder(exported):
    result = CliRunner().invoke(app, ["export", "demo", "--to-hf", str(exported)])
    assert result.exit_code == 2 and "not an empty folder" in result.stderr, result.output


def test_gpt2s_ranks_convert_to_its_published_vocab_and_merges():
    import json

    tiktoken = pytest.importorskip("tiktoken")
    encoder, merges = gpt2_cache_files()
    vocab, lines = gpt2_vocab_and_merges(tiktoken.get_encoding("gpt2"))
    assert vocab == json.loads(encoder.read_text(encoding="utf-8"))
    assert lines == merges.read_text(encoding="utf-8").splitlines()[1:]
