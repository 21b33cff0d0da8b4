"""What a loaded logits record must hold before anything reads it: every field's type, dtype,
shape and range (the format is in ``samplekit.lab.record``'s docstring).

``check_record`` raises a ``RecordError`` naming the field, what it holds and what is allowed;
after it passes, indexing with any id, document or position of the record stays in bounds and
no size in it can ask for more memory than the file's own size (or, for rows rebuilt at the
vocabulary's size, ``MAX_VOCAB``).
"""

from __future__ import annotations

from typing import Any

import torch

from samplekit.lab.errors import RecordError
from samplekit.messages import short_repr
from samplekit.safe_io import MAX_DEPTH

MAX_VOCAB = 1 << 24  # the largest vocabulary a record may state (as a model folder's config.json)
MAX_CONTEXT = 1 << 26
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: name: (dimensions, "int" or "float")
LAYOUT = {"tokens": (2, "int"), "lengths": (1, "int"), "prompt_lengths": (1, "int"), "doc": (1, "int"),
          "target": (1, "int"), "top_values": (2, "float"), "top_ids": (2, "int"), "lse": (1, "float"),
          "target_logit": (1, "float"), "entropy": (1, "float")}
_PLAIN = (str, int, float, bool, type(None))


def damaged(path: Any, what: str) -> RecordError:
    return RecordError(f"{path}: the record is damaged: {what}")


def check_parts(data: Any, path: Any) -> tuple[dict, dict]:
    """``data``'s meta (a dict of plain JSON-like values) and tensors (a dict holding every field
    of ``LAYOUT`` with its dimensions and dtype kind, each no larger than the file)."""
    meta = data.get("meta", {})
    if not isinstance(meta, dict):
        raise damaged(path, f"'meta' is {type(meta).__name__}; expected a dict")
    _check_plain(meta, path)
    tensors = data.get("tensors")
    if not isinstance(tensors, dict):
        raise damaged(path, f"'tensors' is {type(tensors).__name__}; expected a dict of tensors")
    missing = [k for k in LAYOUT if not isinstance(tensors.get(k), torch.Tensor)]
    if missing:
        raise damaged(path, f"no {', '.join(missing)}")
    for name, (dims, kind) in LAYOUT.items():
        t = tensors[name]
        allowed = INTEGER_DTYPES if kind == "int" else FLOAT_DTYPES
        if t.layout != torch.strided or t.dtype not in allowed:
            raise damaged(path, f"{name} is a {t.layout} tensor of {t.dtype}; expected a dense tensor of "
                                f"{'integers' if kind == 'int' else 'floating-point numbers'}")
        if t.dim() != dims or not t.is_contiguous():
            raise damaged(path, f"{name} has shape {list(t.shape)}; expected {dims} dimensions, contiguous")
    return meta, {k: tensors[k] for k in LAYOUT}


def check_sizes(tensors: dict, file_size: int, path: Any) -> None:
    """No tensor holds more bytes than the file they were read from (a damaged size or stride
    would otherwise ask for terabytes at the first copy)."""
    for name, t in tensors.items():
        if t.numel() * t.element_size() > file_size:
            raise damaged(path, f"{name} has shape {list(t.shape)}, more data than the file's {file_size:,} bytes")


def check_record(r, path: Any) -> None:
    """Shapes agree, meta is sane, and every id, length and value is in its range (module docstring)."""
    P, (D, L), N = r.doc.shape[0], r.tokens.shape, r.top_values.shape[1]
    if P == 0 or D == 0 or N == 0:
        raise damaged(path, f"{P} positions, {D} documents, top {N}: a record holds at least one of each")
    if not (r.top_values.shape == r.top_ids.shape == (P, N)
            and all(t.shape == (P,) for t in (r.target, r.lse, r.target_logit, r.entropy))
            and r.lengths.shape == r.prompt_lengths.shape == (D,)):
        raise damaged(path, "its tensors' shapes disagree")
    vocab = _check_meta(r.meta, N, path)
    _in_range(path, "tokens", r.tokens, 0, vocab - 1, "a token id of the vocabulary")
    _in_range(path, "top_ids", r.top_ids, 0, vocab - 1, "a token id of the vocabulary")
    if N > 1 and bool((r.top_ids.long().sort(-1).values.diff(dim=-1) == 0).any()):
        raise damaged(path, "top_ids repeats a token id within a position")
    _in_range(path, "lengths", r.lengths, 1, L, f"from 1 to the documents' width {L}")
    lengths, prompts = r.lengths.long(), r.prompt_lengths.long()
    if bool(((prompts < 1) | (prompts > lengths)).any()):
        raise damaged(path, "a prompt_lengths value is below 1 or past its document's length")
    _in_range(path, "doc", r.doc, 0, D - 1, f"a document index below {D}")
    doc, target = r.doc.long(), r.target.long()
    if bool(((target < prompts[doc]) | (target >= lengths[doc])).any()):
        raise damaged(path, "a target is outside its document's continuation (prompt length to length)")
    _check_values(r, path)


def _check_meta(meta: dict, top_n: int, path: Any) -> int:
    vocab = meta.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or not top_n <= vocab <= MAX_VOCAB:
        raise damaged(path, f"meta.vocab_size is {short_repr(vocab)}; expected an integer from the top-n {top_n} "
                            f"to {MAX_VOCAB:,}")
    stated = meta.get("top_n", top_n)
    if stated != top_n or isinstance(stated, bool):
        raise damaged(path, f"meta.top_n is {short_repr(stated)} but the record keeps the top {top_n}")
    context = meta.get("context_length")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int)
                                or not 1 <= context <= MAX_CONTEXT):
        raise damaged(path, f"meta.context_length is {short_repr(context)}; expected null or an integer from 1 "
                            f"to {MAX_CONTEXT:,}")
    eos = meta.get("eos_token_ids")
    if eos is not None and (not isinstance(eos, list) or len(eos) > 1024 or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab for i in eos)):
        raise damaged(path, f"meta.eos_token_ids is {short_repr(eos)}; expected a list of token ids below {vocab}")
    if meta.get("tokenizer") is not None and not isinstance(meta["tokenizer"], (str, dict)):
        raise damaged(path, f"meta.tokenizer is {short_repr(meta['tokenizer'])}; expected a name or a "
                            "checkpoint's tokenizer entry")
    for key in ("tokenizer_dir", "source"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise damaged(path, f"meta.{key} is {short_repr(meta[key])}; expected a string")
    return vocab


def _check_values(r, path: Any) -> None:
    values = r.top_values.double()
    if bool((values.isnan() | (values == float("inf"))).any()) or not bool(values[:, 0].isfinite().all()):
        raise damaged(path, "top_values holds NaN or +inf, or a position whose largest logit is not finite")
    if values.shape[1] > 1 and bool((values.diff(dim=-1) > 0).any()):
        raise damaged(path, "top_values is not ordered largest first")
    lse = r.lse.double()
    if not bool(lse.isfinite().all()):
        raise damaged(path, "lse holds a value that is not finite")
    if bool((lse < values.logsumexp(-1) - 1e-3).any()):
        raise damaged(path, "lse is below the logsumexp of the recorded top values (a negative tail mass)")
    logit = r.target_logit.double()
    if bool((logit.isnan() | (logit == float("inf"))).any()):
        raise damaged(path, "target_logit holds NaN or +inf")
    entropy = r.entropy.double()
    if not bool(entropy.isfinite().all()) or bool((entropy < -1e-3).any()):
        raise damaged(path, "entropy holds a negative or non-finite value")


def _in_range(path: Any, name: str, t: torch.Tensor, low: int, high: int, allowed: str) -> None:
    if t.numel() and (int(t.min()) < low or int(t.max()) > high):
        bad = int(t.min()) if int(t.min()) < low else int(t.max())
        raise damaged(path, f"{name} holds {bad}; expected {allowed}")


def _check_plain(meta: dict, path: Any) -> None:
    """meta holds only strings, numbers, booleans, null, lists and dicts with string keys, nested
    at most MAX_DEPTH deep (it is printed as JSON)."""
    stack = [(meta, 1, "meta")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            raise damaged(path, f"{where} is nested more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise damaged(path, f"{where} has the key {short_repr(key)}; keys are strings")
                stack.append((item, depth + 1, f"{where}.{key}"))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{where}[{i}]") for i, item in enumerate(value))
        elif not isinstance(value, _PLAIN):
            raise damaged(path, f"{where} is a {type(value).__name__}; meta holds plain values (strings, "
                                "numbers, lists, dicts)")
