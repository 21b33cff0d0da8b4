"""Tokenizers are tiktoken encodings: a tiktoken name ("gpt2"), a local rank file, or a
checkpoint's ``tokenizer`` entry.

A rank file (``.tiktoken``) has one line per token: ``base64(token bytes) rank``. A checkpoint
entry is ``{"name": "gpt2"}`` or ``{"name": str, "file": str (relative to the checkpoint's
folder), "pat_str": str, "special_tokens": {str: int}, "eot_token": int}``.

A model's vocabulary may be larger than its tokenizer's (padded to a multiple of 64, say: 50304
rows for GPT-2's 50257 tokens). The extra ids cannot be decoded, so they must never be sampled
(``undecodable_ids``). A tokenizer whose ordinary tokens or end-of-text id lie outside the model's
vocabulary cannot work with it at all (``check_compatible``).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tiktoken

from samplekit.errors import ConfigError, TokenizerError
from samplekit.messages import one_line, short_repr
from samplekit.safe_io import read_bytes

if TYPE_CHECKING:
    from samplekit.model.checkpoint import CheckpointInfo

ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenisation regex, as tiktoken writes it (r50k_pat_str).
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
DEFAULT_TOKENIZER = "gpt2"
RANK_FILE_LIMIT = 256 << 20  # bytes; the largest tiktoken rank file (o200k) is 3.6 MB


def _named(name: str) -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # requests' ConnectionError, a hash mismatch, a read-only cache...
        detail = one_line(f"{type(exc).__name__}: {exc}", 300)
        raise TokenizerError(
            f"cannot load the tiktoken encoding {name!r}: tiktoken downloads its files on first use, "
            f"and that failed ({detail[:300]}). Connect to the network once, or set "
            "TIKTOKEN_CACHE_DIR to a folder that already holds tiktoken's cached files; or pass a "
            "local .tiktoken rank file instead"
        ) from None


def read_rank_file(path: str | os.PathLike) -> dict[bytes, int]:
    """Parse a .tiktoken rank file (read locally: never the network, never tiktoken's cache)."""
    path = Path(path)
    data = read_bytes(path, limit=RANK_FILE_LIMIT, what="tokenizer file", error=TokenizerError)
    ranks: dict[bytes, int] = {}
    seen: set[int] = set()
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token_b64, rank_text = line.split()
            token, rank = base64.b64decode(token_b64, validate=True), int(rank_text)
        except (ValueError, binascii.Error):
            raise TokenizerError(f"{path}:{lineno}: malformed line {line[:60]!r}; a .tiktoken file "
                                 "has lines 'base64(token bytes) rank'") from None
        if token in ranks or rank in seen or rank < 0:
            raise TokenizerError(f"{path}:{lineno}: token {short_repr(token)} with rank {rank} is a duplicate "
                                 "or negative")
        ranks[token] = rank
        seen.add(rank)
    if not ranks:
        raise TokenizerError(f"{path}: the tokenizer file holds no tokens")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{path}: a byte-level BPE needs all 256 single bytes; "
                             f"{len(missing)} are missing (first: {missing[0]})")
    return ranks


def write_rank_file(path: str | os.PathLike, ranks: dict[bytes, int]) -> Path:
    """Write ``ranks`` as a .tiktoken rank file; returns the path."""
    path = Path(path)
    lines = [base64.b64encode(tok) + b" " + str(rank).encode()
             for tok, rank in sorted(ranks.items(), key=lambda item: item[1])]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _from_file(path: Path, *, name: str | None = None, pat_str: str | None = None,
               special_tokens: dict[str, int] | None = None,
               eot_token: int | None = None) -> tiktoken.Encoding:
    ranks = read_rank_file(path)
    if special_tokens is None:  # GPT-2's convention: end-of-text right after the ranks
        special_tokens = {ENDOFTEXT: max(ranks.values()) + 1 if eot_token is None else eot_token}
    special_tokens = dict(special_tokens)
    if eot_token is not None:
        if special_tokens.setdefault(ENDOFTEXT, eot_token) != eot_token:
            raise TokenizerError(f"{path}: eot_token {eot_token} disagrees with special token "
                                 f"{ENDOFTEXT} = {special_tokens[ENDOFTEXT]}")
    rank_ids = set(ranks.values())
    for text, token_id in special_tokens.items():
        if not isinstance(text, str) or isinstance(token_id, bool) or not isinstance(token_id, int):
            raise TokenizerError(f"{path}: special token {short_repr(text)}: {short_repr(token_id)} must map a str to an int")
        if token_id in rank_ids:
            raise TokenizerError(f"{path}: special token {short_repr(text)} has id {token_id}, which is "
                                 "already the rank of an ordinary token")
    try:
        return tiktoken.Encoding(name or path.stem, pat_str=pat_str or GPT2_PAT_STR,
                                 mergeable_ranks=ranks, special_tokens=special_tokens)
    except Exception as exc:  # a bad regex, mostly
        raise TokenizerError(f"{path}: cannot build the encoding: {one_line(str(exc), 200)}") from None


def _from_entry(entry: dict, base_dir: Path | None) -> tiktoken.Encoding:
    types = {"name": str, "file": str, "pat_str": str, "special_tokens": dict, "eot_token": int}
    for key, kind in types.items():
        if entry.get(key) is not None and (not isinstance(entry[key], kind) or isinstance(entry[key], bool)):
            raise TokenizerError(f"tokenizer entry {key!r} must be a {kind.__name__}, "
                                 f"found {short_repr(entry[key])}")
    if entry.get("file"):
        path = Path(entry["file"]).expanduser()
        path = path if path.is_absolute() or base_dir is None else Path(base_dir) / path
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} does not exist (from the entry "
                                 f"'file': {short_repr(entry['file'])})")
        return _from_file(path, name=entry.get("name"), pat_str=entry.get("pat_str"),
                          special_tokens=entry.get("special_tokens"), eot_token=entry.get("eot_token"))
    if not entry.get("name"):
        raise TokenizerError(f"tokenizer entry {short_repr(entry)} needs a 'name' (a tiktoken encoding such as "
                             "'gpt2') or a 'file'")
    return _load_name(entry["name"])


def _load_name(name: str) -> tiktoken.Encoding:
    known = tiktoken.list_encoding_names()
    if name not in known:
        raise TokenizerError(f"unknown tokenizer {short_repr(name)}: use a tiktoken encoding "
                             f"({', '.join(known)}) or the path of a .tiktoken rank file")
    return _named(name)


def load_tokenizer(spec: str | os.PathLike | dict | tiktoken.Encoding, *,
                   base_dir: str | os.PathLike | None = None, pat_str: str | None = None,
                   special_tokens: dict[str, int] | None = None) -> tiktoken.Encoding:
    """A tiktoken encoding from a name, a rank-file path or a checkpoint entry.

    ``base_dir`` resolves relative paths (a checkpoint's folder). ``pat_str`` (default GPT-2's)
    and ``special_tokens`` (default ``{"<|endoftext|>": last rank + 1}``) apply to rank files.

    >>> load_tokenizer("gpt2").encode("Hello world")  # doctest: +SKIP
    [15496, 995]
    """
    if isinstance(spec, tiktoken.Encoding):
        return spec
    if isinstance(spec, dict):
        return _from_entry(spec, None if base_dir is None else Path(base_dir))
    if not isinstance(spec, (str, os.PathLike)):
        raise TokenizerError(f"a tokenizer is a name, a path or a dict, not {type(spec).__name__}")
    if isinstance(spec, str) and spec in tiktoken.list_encoding_names():
        return _named(spec)
    path = Path(spec).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if path.is_file():
        return _from_file(path, pat_str=pat_str, special_tokens=special_tokens)
    text = str(spec)
    looks_like_name = not any(c in text for c in ("/", os.sep, "."))
    if isinstance(spec, str) and looks_like_name and not path.exists():
        return _load_name(text)  # reads as a name: say which names exist
    raise TokenizerError(f"tokenizer file {path} does not exist" if not path.exists()
                         else f"tokenizer {path} is not a file (expected a .tiktoken rank file)")


def end_of_text_id(enc: tiktoken.Encoding) -> int | None:
    """The id of ``<|endoftext|>``, or None when the encoding has no such token."""
    return enc.encode_single_token(ENDOFTEXT) if ENDOFTEXT in enc.special_tokens_set else None


def _ordinary_max(enc: tiktoken.Encoding) -> int:
    """The largest id of an ordinary (mergeable) token; -1 when there is none."""
    ranks = getattr(enc, "_mergeable_ranks", None)
    if isinstance(ranks, dict):
        return max(ranks.values(), default=-1)
    for i in range(enc.max_token_value, -1, -1):  # no private table: ask tiktoken, id by id
        if not enc.is_special_token(i):
            try:
                enc.decode_single_token_bytes(i)
            except KeyError:  # a gap
                continue
            return i
    return -1


def decodable_vocab_size(tokenizer: Any) -> int:
    """Token ids from this one up cannot be decoded by ``tokenizer`` (tiktoken: ``n_vocab``;
    other tokenizers: ``n_vocab``, ``vocab_size`` or ``len``). A model whose vocabulary is larger
    (padded) must never sample them."""
    for attr in ("n_vocab", "vocab_size"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    try:
        return len(tokenizer)
    except TypeError:
        raise TokenizerError(f"cannot tell the vocabulary size of {type(tokenizer).__name__}: it has "
                             "no n_vocab, vocab_size or len()") from None


def _assigned_ids(enc: tiktoken.Encoding) -> set[int] | None:
    ranks = getattr(enc, "_mergeable_ranks", None)
    specials = getattr(enc, "_special_tokens", None)
    if isinstance(ranks, dict) and isinstance(specials, dict):
        return set(ranks.values()) | set(specials.values())
    return None


def undecodable_ids(tokenizer: Any, vocab_size: int) -> list[int]:
    """The ids in ``[0, vocab_size)`` that ``tokenizer`` cannot decode, ascending: a padded
    vocabulary's extra rows (``decodable_vocab_size(tokenizer)`` and up), and for tiktoken the
    gaps below ``n_vocab`` that no token holds (cl100k_base has some). The engine masks these to
    -inf so they are never sampled."""
    size = decodable_vocab_size(tokenizer)
    beyond = list(range(min(size, vocab_size), vocab_size))
    if not isinstance(tokenizer, tiktoken.Encoding):
        return beyond
    assigned = _assigned_ids(tokenizer)
    below = min(size, vocab_size)
    if assigned is not None:
        gaps = [] if len(assigned) >= size else [i for i in range(below) if i not in assigned]
    else:  # no private tables: ask tiktoken about each id
        gaps = []
        for i in range(below):
            try:
                tokenizer.decode_single_token_bytes(i)
            except KeyError:
                gaps.append(i)
    return gaps + beyond


def check_choice(tokens: int, source: str) -> None:
    """Refuse a vocabulary of fewer than two tokens: sampling has nothing to choose between (the
    run would only repeat the one token, or end at once when it is end-of-text, printing nothing)."""
    if tokens < 2:
        raise TokenizerError(f"{source} has {tokens} token{'s' * (tokens != 1)}: generation needs at least 2 "
                             "to choose between; pass the tokenizer the model was trained with (--tokenizer)")


def check_compatible(model_vocab_size: int, tokenizer: Any, source: str) -> None:
    """Refuse a tokenizer that cannot drive a model of ``model_vocab_size`` logits: one whose
    ordinary tokens have ids the model lacks (it is larger than the model's vocabulary by more
    than its special tokens), or whose end-of-text id is outside the model's vocabulary. A model
    vocabulary larger than the tokenizer's (padding) is fine: see ``undecodable_ids``.
    ``source`` says where the tokenizer came from, for the message."""
    name = getattr(tokenizer, "name", type(tokenizer).__name__)
    check_choice(model_vocab_size, f"the model ({source})")
    if isinstance(tokenizer, tiktoken.Encoding):
        top = _ordinary_max(tokenizer)
        if top >= model_vocab_size:
            raise TokenizerError(f"{source} ({name}) has token ids up to {top}, but the model's "
                                 f"vocab_size is {model_vocab_size}: pass the tokenizer the model was "
                                 "trained with (--tokenizer)")
        eot = end_of_text_id(tokenizer)
    else:
        extra = len(getattr(tokenizer, "all_special_ids", ()) or ())
        size = decodable_vocab_size(tokenizer)
        if size - model_vocab_size > extra:
            raise TokenizerError(f"{source} ({short_repr(name)}) has {size} tokens, more than the "
                                 f"model's vocab_size {model_vocab_size} plus its {extra} special "
                                 "tokens: pass the tokenizer the model was trained with (--tokenizer)")
        eot = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eot, int) and eot >= model_vocab_size:
        raise TokenizerError(f"{source} ({name}) has end-of-text id {eot}, outside the model's "
                             f"vocabulary (vocab_size {model_vocab_size}, ids 0 to "
                             f"{model_vocab_size - 1}): pass the tokenizer the model was trained with "
                             "(--tokenizer)")


def usable_special_tokens(tokenizer: tiktoken.Encoding, vocab_size: int) -> set[str]:
    """The special tokens whose ids the model has: the ones a prompt may contain literally."""
    return {t for t in tokenizer.special_tokens_set if tokenizer.encode_single_token(t) < vocab_size}


def tokenizer_for_checkpoint(info: "CheckpointInfo", override: str | os.PathLike | dict | None = None
                             ) -> tiktoken.Encoding:
    """``override`` (the CLI's ``--tokenizer``) wins, then the checkpoint's entry, then "gpt2".

    Raises TokenizerError when the tokenizer cannot drive the model (``check_compatible``).
    """
    if override is not None and override != "":
        enc = load_tokenizer(override)
        source = f"tokenizer {short_repr(str(override))} for checkpoint {info.path}"
    elif info.tokenizer:
        folder = info.path if info.path.is_dir() else info.path.parent
        try:
            enc = load_tokenizer(info.tokenizer, base_dir=folder)
        except TokenizerError as exc:
            raise TokenizerError(f"checkpoint {info.path}: {exc}") from None
        source = f"the tokenizer of checkpoint {info.path}"
    else:
        enc = load_tokenizer(DEFAULT_TOKENIZER)
        source = f"the default tokenizer {DEFAULT_TOKENIZER!r} for checkpoint {info.path}"
    check_compatible(info.config.vocab_size, enc, source)
    return enc


def describe(enc: tiktoken.Encoding) -> dict[str, Any]:
    """A short summary for ``info``-style output: name, vocabulary size, end-of-text id."""
    return {"name": enc.name, "n_vocab": enc.n_vocab, "eot_token": end_of_text_id(enc)}


def encode_prompt(enc, text: str, vocab_size: int | None = None) -> list[int]:
    """The prompt's token ids; special tokens such as ``<|endoftext|>`` may be written literally
    (those the model has, when its ``vocab_size`` is given), and an empty prompt starts from
    ``<|endoftext|>`` (unconditional generation)."""
    if hasattr(enc, "encode_prompt"):  # samplekit.hf: as tokenizer(text) encodes it (its BOS included)
        return enc.encode_prompt(text)
    special = enc.special_tokens_set if vocab_size is None else usable_special_tokens(enc, vocab_size)
    ids = enc.encode(text, allowed_special=special)
    if not ids:
        eot = end_of_text_id(enc)
        if eot is None:
            raise ConfigError("the prompt is empty and the tokenizer has no <|endoftext|> to start from; "
                              "pass a prompt")
        ids = [eot]
    return ids
