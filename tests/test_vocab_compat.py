"""Model and tokenizer vocabularies that differ (issue 10 §2): a padded model vocabulary works and
never produces an id the tokenizer cannot decode; an incompatible pair is refused at load time
with one line."""

from __future__ import annotations

import json

import pytest
import tiktoken
import torch
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.errors import TokenizerError
from samplekit.model.checkpoint import load_checkpoint
from samplekit.model.tokenizer import (ENDOFTEXT, GPT2_PAT_STR, check_compatible, decodable_vocab_size,
                                       tokenizer_for_checkpoint, undecodable_ids, usable_special_tokens)
from tests.helpers_models import (TINY_EOT, TINY_VOCAB_SIZE, make_padded_checkpoint, make_tiny_checkpoint,
                                  make_tiny_encoding, refused)

runner = CliRunner()


def _gappy_encoding() -> tiktoken.Encoding:
    """256 byte tokens, then a gap (256..299), then <|endoftext|> = 300 and <|fim|> = 302."""
    return tiktoken.Encoding("gappy", pat_str=GPT2_PAT_STR,
                             mergeable_ranks={bytes([b]): b for b in range(256)},
                             special_tokens={ENDOFTEXT: 300, "<|fim|>": 302})


def _decodes(enc: tiktoken.Encoding, token: int) -> bool:
    try:
        enc.decode_single_token_bytes(token)
    except KeyError:
        return False
    return True


def test_decodable_vocab_size_is_tiktokens_n_vocab():
    assert decodable_vocab_size(make_tiny_encoding()) == TINY_VOCAB_SIZE
    assert decodable_vocab_size(_gappy_encoding()) == 303


def test_decodable_vocab_size_of_other_tokenizers():
    class HF:
        vocab_size = 1000

    class Sized:
        def __len__(self):
            return 7

    assert decodable_vocab_size(HF()) == 1000 and decodable_vocab_size(Sized()) == 7
    with pytest.raises(TokenizerError, match="cannot tell the vocabulary size of object"):
        decodable_vocab_size(object())


@pytest.mark.parametrize("vocab_size", [TINY_VOCAB_SIZE, 300, 50304 // 64])
def test_undecodable_ids_of_a_padded_vocabulary_are_exactly_the_padding(vocab_size):
    enc = make_tiny_encoding()
    ids = undecodable_ids(enc, vocab_size)
    assert ids == list(range(TINY_VOCAB_SIZE, vocab_size))
    assert [i for i in range(vocab_size) if not _decodes(enc, i)] == ids


def test_undecodable_ids_include_gaps_below_n_vocab():
    enc = _gappy_encoding()
    ids = undecodable_ids(enc, 310)
    assert ids == list(range(256, 300)) + [301] + list(range(303, 310))
    assert [i for i in range(310) if not _decodes(enc, i)] == ids


def test_undecodable_ids_without_tiktokens_private_tables(monkeypatch):
    enc = _gappy_encoding()
    monkeypatch.setattr("samplekit.model.tokenizer._assigned_ids", lambda enc: None)
    assert undecodable_ids(enc, 305) == list(range(256, 300)) + [301, 303, 304]


def test_check_compatible_accepts_equal_and_padded_vocabularies():
    enc = make_tiny_encoding()
    for size in (TINY_VOCAB_SIZE, TINY_VOCAB_SIZE + 1, 50304):
        check_compatible(size, enc, "tiny")


def test_a_tokenizer_with_more_ordinary_tokens_than_the_model_is_refused():
    message = refused(check_compatible, 200, make_tiny_encoding(), "tokenizer 'tiny.tiktoken'",
                      error=TokenizerError)
    assert message == ("tokenizer 'tiny.tiktoken' (tiny) has token ids up to 267, but the model's "
                       "vocab_size is 200: pass the tokenizer the model was trained with (--tokenizer)")


def test_an_end_of_text_id_outside_the_models_vocabulary_is_refused():
    message = refused(check_compatible, TINY_EOT, make_tiny_encoding(), "tok", error=TokenizerError)
    assert message.startswith(f"tok (tiny) has end-of-text id {TINY_EOT}, outside the model's vocabulary "
                              f"(vocab_size {TINY_EOT}, ids 0 to {TINY_EOT - 1})")


def test_other_special_tokens_past_the_vocabulary_are_tolerated_but_not_usable():
    enc = _gappy_encoding()
    check_compatible(301, enc, "gappy")  # <|fim|> = 302 lies outside: tolerated
    assert usable_special_tokens(enc, 301) == {ENDOFTEXT}
    assert usable_special_tokens(enc, 303) == {ENDOFTEXT, "<|fim|>"}


def test_a_tokenizer_of_another_kind_larger_than_the_model_by_more_than_its_specials_is_refused():
    class HF:
        name = "hf"
        vocab_size = 110
        all_special_ids = [100, 101]
        eos_token_id = 100

    check_compatible(108, HF(), "hf tokenizer")
    with pytest.raises(TokenizerError, match="has 110 tokens, more than the model's vocab_size 107 plus its 2"):
        check_compatible(107, HF(), "hf tokenizer")
    with pytest.raises(TokenizerError, match="end-of-text id 100, outside"):
        check_compatible(100, type("T", (), {"vocab_size": 100, "eos_token_id": 100})(), "t")


def test_tokenizer_for_checkpoint_refuses_an_end_of_text_id_the_model_lacks(tmp_path):
    _, info = load_checkpoint(make_tiny_checkpoint(tmp_path, vocab_size=TINY_EOT))
    message = refused(tokenizer_for_checkpoint, info, error=TokenizerError)
    assert message.startswith(f"the tokenizer of checkpoint {info.path} (tiny) has end-of-text id {TINY_EOT}")


def test_the_cli_refuses_an_incompatible_pair_with_one_line_and_status_2(tmp_path):
    path = make_tiny_checkpoint(tmp_path, vocab_size=200)
    result = runner.invoke(app, ["generate", "the", "--checkpoint", str(path), "--device", "cpu", "-n", "3"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "has token ids up to 267, but the model's vocab_size is 200" in lines[0]


def test_the_padded_model_picks_padding_when_nothing_masks_it(tmp_path):
    model, _ = load_checkpoint(make_padded_checkpoint(tmp_path))
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]]))[0]
    assert (logits.argmax(-1) >= TINY_VOCAB_SIZE).all()  # so the tests below test the masking


@pytest.mark.parametrize("config", ["greedy", "balanced"])
def test_a_padded_vocabulary_generates_and_decodes_through_the_cli(tmp_path, config):
    path = make_padded_checkpoint(tmp_path)
    result = runner.invoke(app, ["generate", "the", "--checkpoint", str(path), "--device", "cpu", "-n", "24",
                                 "--seed", "0", "--config", config, "--json", "--set", "stop_on_eos=false"])
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, result.stdout.splitlines())
    assert len(row["tokens"]) == 24 and max(row["tokens"]) < TINY_VOCAB_SIZE
    assert row["text"] == make_tiny_encoding().decode(row["tokens"])
    streamed = runner.invoke(app, ["generate", "the", "--checkpoint", str(path), "--device", "cpu", "-n", "24",
                                   "--seed", "0", "--config", config, "--set", "stop_on_eos=false"])
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == "the" + row["text"] + "\n"


def test_the_engine_never_samples_an_undecodable_id(tmp_path):
    from samplekit import generate

    model, info = load_checkpoint(make_padded_checkpoint(tmp_path))
    enc = tokenizer_for_checkpoint(info)
    results = generate(model, [enc.encode("the"), enc.encode("he")], chain="creative", max_new_tokens=16,
                       seed=[1, 2], tokenizer=enc, stop_on_eos=False)
    for result in results:
        assert len(result.tokens) == 16 and max(result.tokens) < TINY_VOCAB_SIZE


def test_ids_in_a_gap_of_the_tokenizer_are_never_sampled(tmp_path):
    """A tokenizer may leave ids unassigned below its n_vocab (cl100k_base does); the engine must
    mask those too: ``undecodable_ids``, not only ``decodable_vocab_size``."""
    from samplekit.model.checkpoint import save_checkpoint
    from samplekit.model.tokenizer import write_rank_file
    from tests.helpers_models import make_tiny_model, rig_logits

    write_rank_file(tmp_path / "bytes.tiktoken", {bytes([b]): b for b in range(256)})
    model = rig_logits(make_tiny_model(vocab_size=301), range(256, 300))  # the gap: 256..299
    path = save_checkpoint(tmp_path / "gappy.pt", model, tokenizer={
        "name": "gappy", "file": "bytes.tiktoken", "special_tokens": {ENDOFTEXT: 300}})
    result = runner.invoke(app, ["generate", "the", "--checkpoint", str(path), "--device", "cpu", "-n", "8",
                                 "--seed", "0", "--config", "greedy", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = map(json.loads, result.stdout.splitlines())
    assert row["tokens"] and all(t < 256 or t == 300 for t in row["tokens"])
