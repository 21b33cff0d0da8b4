"""Tokenizers are tiktoken encodings: a tiktoken name ("gpt2"), a local rank file, or a
checkpoint's ``tokenizer`` entry.

A rank file (``.tiktoken``) has one line per token: ``base64(token bytes) rank``. A checkpoint
entry is ``{"name": "gpt2"}`` or ``{"name": str, "file": str (relative to the checkpoint's
folder), "pat_str": str, "special_tokens": {str: int}, "eot_token": int}``.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tiktoken

from samplekit.errors import TokenizerError

if TYPE_CHECKING:
    from samplekit.model.checkpoint import CheckpointInfo

ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenisation regex, as tiktoken writes it (r50k_pat_str).
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
DEFAULT_TOKENIZER = "gpt2"


def _named(name: str) -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:  # requests' ConnectionError, a hash mismatch, a read-only cache...
        detail = f"{type(exc).__name__}: {exc}"
        raise TokenizerError(
            f"cannot load the tiktoken encoding {name!r}: tiktoken downloads its files on first use, "
            f"and that failed ({detail[:300]}). Connect to the network once, or set "
            "TIKTOKEN_CACHE_DIR to a folder that already holds tiktoken's cached files; or pass a "
            "local .tiktoken rank file instead"
        ) from None


def read_rank_file(path: str | os.PathLike) -> dict[bytes, int]:
    """Parse a .tiktoken rank file (read locally: never the network, never tiktoken's cache)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"cannot read tokenizer file {path}: {exc.strerror or exc}") from None
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
            raise TokenizerError(f"{path}:{lineno}: token {token!r} with rank {rank} is a duplicate "
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
            raise TokenizerError(f"{path}: special token {text!r}: {token_id!r} must map a str to an int")
        if token_id in rank_ids:
            raise TokenizerError(f"{path}: special token {text!r} has id {token_id}, which is "
                                 "already the rank of an ordinary token")
    try:
        return tiktoken.Encoding(name or path.stem, pat_str=pat_str or GPT2_PAT_STR,
                                 mergeable_ranks=ranks, special_tokens=special_tokens)
    except Exception as exc:  # a bad regex, mostly
        raise TokenizerError(f"{path}: cannot build the encoding: {exc}") from None


def _from_entry(entry: dict, base_dir: Path | None) -> tiktoken.Encoding:
    types = {"name": str, "file": str, "pat_str": str, "special_tokens": dict, "eot_token": int}
    for key, kind in types.items():
        if entry.get(key) is not None and (not isinstance(entry[key], kind) or isinstance(entry[key], bool)):
            raise TokenizerError(f"tokenizer entry {key!r} must be a {kind.__name__}, "
                                 f"found {entry[key]!r}")
    if entry.get("file"):
        path = Path(entry["file"]).expanduser()
        path = path if path.is_absolute() or base_dir is None else Path(base_dir) / path
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} does not exist (from the entry "
                                 f"'file': {entry['file']!r})")
        return _from_file(path, name=entry.get("name"), pat_str=entry.get("pat_str"),
                          special_tokens=entry.get("special_tokens"), eot_token=entry.get("eot_token"))
    if not entry.get("name"):
        raise TokenizerError(f"tokenizer entry {entry!r} needs a 'name' (a tiktoken encoding such as "
                             "'gpt2') or a 'file'")
    return _load_name(entry["name"])


def _load_name(name: str) -> tiktoken.Encoding:
    known = tiktoken.list_encoding_names()
    if name not in known:
        raise TokenizerError(f"unknown tokenizer {name!r}: use a tiktoken encoding "
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
    return next((i for i in range(enc.max_token_value, -1, -1) if not enc.is_special_token(i)), -1)


def tokenizer_for_checkpoint(info: "CheckpointInfo", override: str | os.PathLike | dict | None = None
                             ) -> tiktoken.Encoding:
    """``override`` (the CLI's ``--tokenizer``) wins, then the checkpoint's entry, then "gpt2".

    Raises TokenizerError when ordinary tokens would have ids the model's embedding lacks.
    """
    if override is not None and override != "":
        enc, source = load_tokenizer(override), f"tokenizer {override!r}"
    elif info.tokenizer:
        folder = info.path if info.path.is_dir() else info.path.parent
        try:
            enc = load_tokenizer(info.tokenizer, base_dir=folder)
        except TokenizerError as exc:
            raise TokenizerError(f"checkpoint {info.path}: {exc}") from None
        source = f"the tokenizer of checkpoint {info.path}"
    else:
        enc, source = load_tokenizer(DEFAULT_TOKENIZER), f"the default tokenizer {DEFAULT_TOKENIZER!r}"
    top = _ordinary_max(enc)
    if top >= info.config.vocab_size:
        raise TokenizerError(f"{source} ({enc.name}) has token ids up to {top}, but the model's "
                             f"vocab_size is {info.config.vocab_size}: pass the tokenizer the model "
                             "was trained with (--tokenizer)")
    return enc


def describe(enc: tiktoken.Encoding) -> dict[str, Any]:
    """A short summary for ``info``-style output: name, vocabulary size, end-of-text id."""
    return {"name": enc.name, "n_vocab": enc.n_vocab, "eot_token": end_of_text_id(enc)}
