"""Hugging Face tokenizers wherever samplekit uses a tokenizer: token bytes, streaming, stop strings,
banned strings, logit bias by string, special tokens and end-of-text ids.

Real tokenizers built offline: GPT-2's (from the tiktoken cache), a byte-level BPE and a
Llama-2-style one (``▁`` spaces, ``<0xNN>`` byte fallback) trained here.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers", reason="the hf extra: pip install 'samplekit-lm[hf]'")

import samplekit  # noqa: E402
from samplekit.hf import HFTokenizer, load  # noqa: E402
from samplekit.stopping import StopStrings, TextStream  # noqa: E402
from tests.hf_fixtures import byte_level_tokenizer, gpt2_tokenizer, llama_style_tokenizer, model_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXT = "Café 🙂 naïve ROMEO: wherefore art thou, Romeo?\n\n  x"
KINDS = {"byte_level": byte_level_tokenizer, "llama_style": llama_style_tokenizer}


@pytest.fixture(scope="module")
def tokenizers():
    return {name: make() for name, make in KINDS.items()}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tokenizers):
    """(model, tokenizer) through samplekit.hf.load, per tokenizer kind (a tiny Llama)."""
    root = tmp_path_factory.mktemp("hf-tok")
    return {name: load(model_folder(root, "llama", tokenizer=tok, name=name)) for name, tok in tokenizers.items()}


def greedy(model, tok, prompt: str, n: int = 24, **options):
    options = {"chain": "greedy", "max_new_tokens": n, "stop_on_eos": False, "tokenizer": tok, **options}
    return samplekit.generate(model, [tok.encode_prompt(prompt)], **options)[0]


def test_gpt2_token_bytes_and_encodings_equal_tiktokens():
    tiktoken = pytest.importorskip("tiktoken")
    tok = HFTokenizer(gpt2_tokenizer())
    enc = tiktoken.get_encoding("gpt2")
    assert (tok.kind, tok.n_vocab) == ("byte_level", enc.n_vocab)
    assert all(tok.decode_single_token_bytes(i) == enc.decode_single_token_bytes(i) for i in range(enc.n_vocab))
    text = TEXT + " <|endoftext|> the end"
    assert tok.encode(text) == enc.encode(text, disallowed_special=())  # special tokens as plain text
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.special_tokens_set == {"<|endoftext|>"} and tok.encode_single_token("<|endoftext|>") == 50256
    assert tok.encode_single_token(" the") == enc.encode_single_token(" the") and tok.eot_token == 50256
    assert tok.encode_prompt(" the") == [262] and tok.encode_prompt("") == [50256]  # GPT-2 adds no BOS


@pytest.mark.parametrize("kind", KINDS)
def test_token_bytes_joined_decode_like_the_tokenizer(tokenizers, kind):
    tok = HFTokenizer(tokenizers[kind])
    ids = tok.encode(TEXT)
    joined = tok.decode_bytes(ids).decode("utf-8")
    # SentencePiece decoders strip the space that starts the text; a continuation keeps it
    assert (joined.removeprefix(" ") if kind == "llama_style" else joined) == tok.decode(ids) == TEXT
    fallback = {i for i in ids if tokenizers[kind].convert_ids_to_tokens(i).startswith("<0x")}
    assert max(ids) < tok.n_vocab and all(tok.encode_single_token(tok.decode_single_token_bytes(i)) == i
                                          for i in set(ids) - fallback)


def test_llama_style_spaces_and_byte_fallback_tokens_become_their_bytes(tokenizers):
    tok = HFTokenizer(tokenizers["llama_style"])
    hf = tokenizers["llama_style"]
    assert tok.kind == "sentencepiece"
    assert tok.decode_single_token_bytes(hf.convert_tokens_to_ids("<0xC3>")) == b"\xc3"
    assert tok.decode_single_token_bytes(hf.convert_tokens_to_ids("\u2581Romeo")) == b" Romeo"
    assert tok.encode_prompt("Romeo")[0] == hf.bos_token_id and tok.encode("Romeo")[0] != hf.bos_token_id
    assert tok.special_tokens_set == {"<unk>", "<s>", "</s>"} and tok.eot_token == hf.eos_token_id


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_holds_back_split_characters_and_ends_with_the_decoded_text(tokenizers, kind):
    tok = HFTokenizer(tokenizers[kind])
    ids = tok.encode(TEXT)
    assert any(not _is_utf8(tok.decode_single_token_bytes(i)) for i in ids)  # some token splits a character
    stream = TextStream(tok, StopStrings())
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces).removeprefix(" ") == TEXT


@pytest.mark.parametrize("kind", KINDS)
def test_stop_strings_across_token_boundaries_and_streamed_events(loaded, kind):
    model, tok = loaded[kind]
    full = greedy(model, tok, "ROMEO:")
    bytes_ = [tok.decode_single_token_bytes(t) for t in full.tokens]
    starts = [len(b"".join(bytes_[:i]).decode("utf-8", "replace")) for i in range(len(bytes_))]
    cut = next(s for s in starts[3:] if 1 <= s < len(full.text) - 1 and full.text[s - 1:s + 1].strip())
    stop = full.text[cut - 1:cut + 1]  # the last character of one token and the first of the next
    stopped = greedy(model, tok, "ROMEO:", stop=[stop])
    assert stopped.finish_reason == "stop" and stopped.text == full.text[:full.text.index(stop)]
    events = list(samplekit.generate_stream(model, [tok.encode_prompt("ROMEO:")], chain="greedy", max_new_tokens=24,
                                            stop_on_eos=False, tokenizer=tok, stop=[stop]))
    assert "".join(e.text for e in events) == stopped.text and events[-1].finished == "stop"


@pytest.mark.parametrize("kind", KINDS)
def test_banned_strings_and_string_logit_bias_use_the_hf_tokenizer(loaded, kind):
    model, tok = loaded[kind]
    full = greedy(model, tok, "ROMEO:")
    banned = next(full.text[i:i + 3] for i in range(len(full.text)) if full.text[i:i + 3].isascii()
                  and full.text[i:i + 3].isprintable())  # whole characters: matched on bytes
    chain = {"chain": [{"banned_strings": {"strings": [banned]}}, "greedy"]}
    assert banned in full.text and banned not in greedy(model, tok, "ROMEO:", chain=chain).text
    text = " Romeo" if kind == "byte_level" else "Romeo"  # one token: "ĠRomeo", "▁Romeo"
    (target,) = tok.encode(text, allowed_special="all")
    bias = {"chain": [{"logit_bias": {"bias": {text: 100.0}}}, "greedy"]}
    assert set(greedy(model, tok, "ROMEO:", n=5, chain=bias).tokens) == {target}


def test_end_of_text_ids_come_from_the_generation_config_and_the_tokenizer(tmp_path, tokenizers):
    hf_tok = tokenizers["byte_level"]
    folder = model_folder(tmp_path, "gpt2", tokenizer=hf_tok)
    model, tok = load(folder)
    free = greedy(model, tok, "ROMEO:", n=12)
    step = max(i for i, t in enumerate(free.tokens) if t not in free.tokens[:i])  # its first appearance
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [free.tokens[step], 7]
    (folder / "generation_config.json").write_text(json.dumps(config))
    model, tok = load(folder)
    assert tok.eos_token_ids == (free.tokens[step], 7, hf_tok.eos_token_id)
    ended = greedy(model, tok, "ROMEO:", n=12, stop_on_eos=True)
    assert ended.finish_reason == "eos" and ended.tokens == free.tokens[:step]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
