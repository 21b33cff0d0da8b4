"""Tokenizers: tiktoken names, local rank files, checkpoint entries; never the network."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from samplekit.errors import TokenizerError
from samplekit.model.checkpoint import load_checkpoint
from samplekit.model.tokenizer import (ENDOFTEXT, end_of_text_id, load_tokenizer, read_rank_file,
                                       tokenizer_for_checkpoint)
from tests.helpers_models import (TINY_EOT, TINY_VOCAB_SIZE, make_tiny_checkpoint,
                                  make_tiny_encoding, tiny_tokenizer_entry, write_tiny_encoding)

# tiktoken's cache names each file by the SHA-1 of the address it downloads it from.
GPT2_FILES = {hashlib.sha1(url.encode()).hexdigest(): url for url in (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")}
OFFLINE_CACHE = os.environ.get("TIKTOKEN_CACHE_DIR", "")  # read before any test changes it
TEXT = "Hello there, the wall. <3 héllo\n\tworld 42"


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """tiktoken cannot download, and its cache is an empty folder."""
    calls = []

    def offline(blobpath):
        calls.append(blobpath)
        raise ConnectionError(f"no network to fetch {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    return calls


def offline_gpt2_cache() -> Path | None:
    """The folder TIKTOKEN_CACHE_DIR names, when it holds tiktoken's two gpt2 files."""
    if not OFFLINE_CACHE:
        return None
    folder = Path(OFFLINE_CACHE)
    return folder if all((folder / name).is_file() for name in GPT2_FILES) else None


@pytest.fixture
def gpt2_cache(monkeypatch):
    """The real gpt2 encoding from the offline cache TIKTOKEN_CACHE_DIR names; the network is
    blocked, so a cache miss fails instead of downloading."""
    folder = offline_gpt2_cache()
    if folder is None:
        why = "is not set" if not OFFLINE_CACHE else f"={OFFLINE_CACHE} lacks them"
        pytest.skip(f"the real gpt2 encoding needs TIKTOKEN_CACHE_DIR naming a folder with tiktoken's "
                    f"cached gpt2 files ({', '.join(GPT2_FILES)}, e.g. ../shared/tiktoken-cache): "
                    f"TIKTOKEN_CACHE_DIR {why}")

    def offline(blobpath):
        raise AssertionError(f"tiktoken tried to download {blobpath}: the offline cache missed")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(folder))
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)  # load it from the cache


def test_tiny_encoding_round_trips_text_and_uses_merges():
    enc = make_tiny_encoding()
    ids = enc.encode(TEXT)
    assert enc.decode(ids) == TEXT
    assert len(ids) < len(TEXT.encode())  # merges happened
    assert enc.encode(" the") == [256 + 7]
    assert enc.n_vocab == TINY_VOCAB_SIZE and end_of_text_id(enc) == TINY_EOT


def test_rank_file_loads_the_same_encoding_without_network(tmp_path, no_network):
    path = write_tiny_encoding(tmp_path / "tiny.tiktoken")
    enc = load_tokenizer(path)
    assert enc.encode(TEXT) == make_tiny_encoding().encode(TEXT)
    assert end_of_text_id(enc) == TINY_EOT  # default: <|endoftext|> right after the ranks
    assert no_network == [] and not (tmp_path / "empty-cache").exists()


def test_rank_file_accepts_pat_str_and_special_tokens(tmp_path):
    path = write_tiny_encoding(tmp_path / "tiny.tiktoken")
    enc = load_tokenizer(str(path), pat_str=r"\S+|\s+", special_tokens={"<|stop|>": 400})
    assert end_of_text_id(enc) is None
    assert enc.encode("<|stop|>", allowed_special="all") == [400]


def test_rank_file_relative_to_base_dir(tmp_path):
    write_tiny_encoding(tmp_path / "tiny.tiktoken")
    assert load_tokenizer("tiny.tiktoken", base_dir=tmp_path).n_vocab == TINY_VOCAB_SIZE


def test_missing_rank_file_names_it(tmp_path):
    with pytest.raises(TokenizerError, match="nope.tiktoken does not exist"):
        load_tokenizer(tmp_path / "nope.tiktoken")


@pytest.mark.parametrize("content, expected", [
    (b"this is not base64 at all\n", r"bad.tiktoken:1: malformed line"),
    (b"QQ== 0\nQQ== 1\n", r"bad.tiktoken:2: .*duplicate"),
    (b"\n\n", r"bad.tiktoken: the tokenizer file holds no tokens"),
    (base64.b64encode(b"A") + b" 0\n", r"bad.tiktoken: a byte-level BPE needs all 256 single bytes"),
])
def test_malformed_rank_file_is_a_tokenizer_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(content)
    with pytest.raises(TokenizerError, match=expected):
        load_tokenizer(path)


def test_special_token_colliding_with_a_rank_is_refused(tmp_path):
    path = write_tiny_encoding(tmp_path / "tiny.tiktoken")
    with pytest.raises(TokenizerError, match="already the rank of an ordinary token"):
        load_tokenizer(path, special_tokens={ENDOFTEXT: 10})


def test_checkpoint_entry_with_a_file_resolves_against_the_checkpoint_folder(tmp_path):
    write_tiny_encoding(tmp_path / "tiny.tiktoken")
    enc = load_tokenizer(tiny_tokenizer_entry(), base_dir=tmp_path)
    assert enc.name == "tiny" and enc.encode(TEXT) == make_tiny_encoding().encode(TEXT)


def test_checkpoint_entry_of_the_wrong_type_is_named():
    with pytest.raises(TokenizerError, match="'special_tokens' must be a dict"):
        load_tokenizer({"name": "x", "file": "x.tiktoken", "special_tokens": [1]})


def test_unknown_tokenizer_name_lists_the_known_ones():
    with pytest.raises(TokenizerError, match="unknown tokenizer 'gpt3'.*gpt2"):
        load_tokenizer("gpt3")


def test_tokenizer_for_checkpoint_uses_the_checkpoints_entry(tmp_path):
    _, info = load_checkpoint(make_tiny_checkpoint(tmp_path))
    enc = tokenizer_for_checkpoint(info)
    assert enc.encode(TEXT) == make_tiny_encoding().encode(TEXT)


def test_tokenizer_override_wins_over_the_checkpoint_entry(tmp_path):
    _, info = load_checkpoint(make_tiny_checkpoint(tmp_path, vocab_size=500))
    other = tmp_path / "other.tiktoken"
    other.write_bytes(b"".join(base64.b64encode(bytes([b])) + b" %d\n" % b for b in range(256)))
    assert tokenizer_for_checkpoint(info, str(other)).n_vocab == 257


def test_tokenizer_larger_than_the_models_vocabulary_is_refused(tmp_path, gpt2_cache):
    _, info = load_checkpoint(make_tiny_checkpoint(tmp_path))
    with pytest.raises(TokenizerError, match=rf"ids up to 50255.*vocab_size is {TINY_VOCAB_SIZE}"):
        tokenizer_for_checkpoint(info, "gpt2")


def test_checkpoint_without_entry_defaults_to_gpt2(tmp_path, gpt2_cache):
    _, info = load_checkpoint(make_tiny_checkpoint(tmp_path, vocab_size=50257, with_tokenizer=False))
    enc = tokenizer_for_checkpoint(info)
    assert enc.name == "gpt2" and enc.encode("Hello world") == [15496, 995]


def test_missing_tokenizer_file_of_a_checkpoint_names_both(tmp_path):
    path = make_tiny_checkpoint(tmp_path)
    (tmp_path / "tiny.tiktoken").unlink()
    _, info = load_checkpoint(path)
    with pytest.raises(TokenizerError, match=r"tiny.pt: tokenizer file .*tiny.tiktoken does not exist"):
        tokenizer_for_checkpoint(info)


def test_real_gpt2_encodes_hello_world_offline(gpt2_cache):
    enc = load_tokenizer("gpt2")
    assert enc.encode("Hello world") == [15496, 995]
    assert end_of_text_id(enc) == 50256
    assert load_tokenizer({"name": "gpt2"}) is enc


def test_gpt2_without_network_explains_tiktoken_cache_dir(no_network):
    with pytest.raises(TokenizerError) as err:
        load_tokenizer("gpt2")
    assert "TIKTOKEN_CACHE_DIR" in str(err.value) and "download" in str(err.value)
    assert no_network  # it really tried to download, and we stopped it


def test_end_of_text_id_is_none_without_the_special_token(tmp_path):
    path = write_tiny_encoding(tmp_path / "t.tiktoken")
    assert end_of_text_id(load_tokenizer(path, special_tokens={})) is None


def test_read_rank_file_matches_tiktokens_parser(tmp_path, monkeypatch):
    path = write_tiny_encoding(tmp_path / "tiny.tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's parser, with its cache off
    assert read_rank_file(path) == tiktoken.load.load_tiktoken_bpe(str(path))
