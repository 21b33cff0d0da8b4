"""Multi-token steering: a bias on token sequences, and banned token sequences (Hugging Face's
``SequenceBiasLogitsProcessor`` and ``NoBadWordsLogitsProcessor``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from samplekit.errors import ParameterError
from samplekit.hookspecs import hookimpl
from samplekit.messages import short_repr
from samplekit.params import TOKEN_ID_LIMIT, Param
from samplekit.processor import Processor, default_context

_PAIR = "[sequence, bias] (the sequence a non-empty list of token ids or a non-empty string, the bias a number)"
_SEQUENCE = "a non-empty list of token ids or a non-empty string"


def _sequence(item: Any, where: str) -> tuple[int, ...] | str:
    """A validated sequence: a tuple of token ids, or text to tokenize when the generation starts."""
    if isinstance(item, str) and item:
        return item
    if isinstance(item, (list, tuple)) and item and all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < TOKEN_ID_LIMIT for t in item):
        return tuple(item)
    raise ParameterError(f"{where}: {short_repr(item)} is not allowed; expected {_SEQUENCE} (ids in [0, 2**31))")


def _encode(tokenizer: Any, text: str, where: str) -> tuple[int, ...]:
    if tokenizer is None:
        raise ParameterError(f"{where}: {text!r} is text, but this generation has no tokenizer to turn it into "
                             "token ids; give the token ids instead")
    try:
        ids = tokenizer.encode(text, allowed_special="all")  # tiktoken, and samplekit's HF wrapper
    except TypeError:
        ids = tokenizer.encode(text)
    return tuple(int(t) for t in ids)


class _SequenceProcessor(Processor):
    """Adds a bias to the last token of each listed sequence whose other tokens end the history.

    ``start`` resolves each row's sequences (text through ``ctx.tokenizer``) into a table grouped
    by prefix length, so that each group is matched with one comparison; rows with equal lists
    share one table (state: the distinct tables, and each row's table index)."""

    needs_history = True
    stateful = True

    def _entries(self) -> list[tuple[tuple[int, ...] | str, float, str]]:
        """``(sequence, bias, where)`` for each listed sequence."""
        raise NotImplementedError

    def _table(self, tokenizer: Any) -> dict:
        table: dict[tuple[int, ...], tuple[str, float]] = {}
        for seq, bias, where in self._entries():
            ids = _encode(tokenizer, seq, where) if isinstance(seq, str) else seq
            if not ids:
                raise ParameterError(f"{where}: {seq!r} encodes to no token")
            if ids in table:
                raise ParameterError(f"{where}: the sequence {list(ids)} is listed twice (also at {table[ids][0]}); "
                                     "list it once")
            table[ids] = (where, bias)
        groups: dict[int, list[tuple[tuple[int, ...], float]]] = {}
        for ids, (_, bias) in table.items():
            groups.setdefault(len(ids) - 1, []).append((ids, bias))
        return {
            "key": tuple(sorted((ids, bias) for ids, (_, bias) in table.items())),
            "max_id": max((max(ids), where) for ids, (where, _) in table.items()) if table else None,
            "groups": [(n, torch.tensor([ids[:-1] for ids, _ in group], dtype=torch.long).view(len(group), n),
                        torch.tensor([ids[-1] for ids, _ in group], dtype=torch.long),
                        torch.tensor([b for _, b in group], dtype=torch.float32))
                       for n, group in sorted(groups.items())],
        }

    def start(self, batch_size, ctx):
        tables: list[dict] = []
        found: dict[Any, int] = {}  # a table's key -> its index
        built: dict[int, int] = {}  # id(row processor) -> its table's index
        rows = []
        for p in self.row_processors(ctx):
            if id(p) not in built:
                table = p._table(ctx.tokenizer)
                if table["key"] not in found:
                    found[table["key"]] = len(tables)
                    tables.append(table)
                built[id(p)] = found[table["key"]]
            rows.append(built[id(p)])
        return {"tables": tables, "rows": torch.tensor(rows, dtype=torch.long)}

    def keep_rows(self, state, rows):
        return _compact(state["tables"], state["rows"][rows.cpu()])

    def join_rows(self, state, joining):
        tables = list(state["tables"])
        index = {t["key"]: i for i, t in enumerate(tables)}
        remap = []
        for table in joining["tables"]:
            if table["key"] not in index:
                index[table["key"]] = len(tables)
                tables.append(table)
            remap.append(index[table["key"]])
        moved = torch.tensor(remap, dtype=torch.long)[joining["rows"]] if remap else joining["rows"]
        return _compact(tables, torch.cat([state["rows"], moved]))

    def process(self, input_ids, scores, ctx):
        state = ctx.state if ctx is not None and ctx.state is not None else self.start(
            scores.shape[0], ctx or default_context(scores.shape[0]))
        vocab_size = scores.shape[-1]
        length = 0 if input_ids is None else input_ids.shape[1]
        mask = ctx.attention_mask if ctx is not None else None
        bias = None
        for t, table in enumerate(state["tables"]):
            if table["max_id"] is None:
                continue
            top, where = table["max_id"]
            if top >= vocab_size:
                raise ParameterError(f"{where}: token id {top} is outside the vocabulary of {vocab_size} tokens")
            mine = None if len(state["tables"]) == 1 else (state["rows"] == t).to(scores.device)[:, None]  # (B, 1)
            if bias is None:
                bias = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)
            for n, prefixes, last, values in table["groups"]:
                if n > length:
                    continue  # the history is shorter than the prefix
                if n == 0:
                    match = torch.ones(scores.shape[0], len(last), dtype=torch.bool, device=scores.device)
                else:
                    tail = input_ids[:, length - n:].to(scores.device)  # (B, n)
                    match = (tail[:, None, :] == prefixes.to(scores.device)[None]).all(dim=-1)  # (B, G)
                    if mask is not None:  # a prefix touching left padding does not count
                        real = mask[:, mask.shape[1] - n:].to(device=scores.device, dtype=torch.bool).all(dim=-1)
                        match &= real[:, None]
                if mine is not None:
                    match &= mine
                bias.index_add_(1, last.to(scores.device), torch.where(match, values.to(scores.device), 0.0))
        return scores if bias is None else scores + bias.to(scores.dtype)


def _compact(tables: list[dict], rows: torch.Tensor) -> dict:
    """The state with only the tables some row uses, renumbered."""
    used = sorted(set(rows.tolist()))
    if len(used) == len(tables):
        return {"tables": tables, "rows": rows}
    remap = torch.zeros(len(tables), dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return {"tables": [tables[i] for i in used], "rows": remap[rows]}


class SequenceBias(_SequenceProcessor):
    """Add a bias to the last token of a sequence when the history ends with its other tokens.

    Contract (Hugging Face's ``SequenceBiasLogitsProcessor``): for each listed sequence
    ``[t1, ..., tn]`` with bias b, ``logit[tn] += b`` in every row whose ``input_ids`` (prompt
    included) end with ``t1 .. t(n-1)``; a one-token sequence is biased at every step. Biases of
    sequences sharing a last token add up; other logits are unchanged; -inf stays -inf. Identical
    to Hugging Face on unpadded input; a prefix that reaches into left padding
    (``ctx.attention_mask`` False) does not match. ``bias`` is a list of ``[sequence, bias]``
    pairs (Hugging Face's list form) or a mapping ``{text: bias}``; a sequence is a list of token
    ids or text, tokenized with ``ctx.tokenizer`` when the generation starts (mind the leading
    space: " Trump" and "Trump" are different tokens). Listing a sequence twice is an error.
    Each row may carry its own list (rows with equal lists share one table).

    >>> SequenceBias(bias=[[[1, 2], -5.0], [[3], 1.0]])(torch.tensor([[0, 1]]), torch.zeros(1, 4))
    tensor([[ 0.,  0., -5.,  1.]])
    """

    name = "sequence_bias"
    primary = "bias"
    params = (Param("bias", "json", [], "[sequence, bias] pairs (sequence: token ids or text), or {text: bias}",
                    per_row=True),)
    neutral = {"bias": []}

    def __init__(self, **values):
        super().__init__(**values)
        raw, where = self.bias, f"{self.name}.bias"
        if isinstance(raw, dict):
            raw = list(raw.items())
        if not isinstance(raw, (list, tuple)):
            raise ParameterError(f"{where}: {short_repr(self.bias)} is not allowed; expected a list of pairs {_PAIR}, "
                                 "or a mapping of text to a bias")
        self._pairs = []
        for i, pair in enumerate(raw):
            at = f"{where}[{i}]"
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ParameterError(f"{at}: {short_repr(pair)} is not allowed; expected a pair {_PAIR}")
            seq, value = pair
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or abs(value) > 3.4e38:
                raise ParameterError(f"{at}: the bias {short_repr(value)} is not allowed; expected a finite number "
                                     "(ban a sequence with banned_sequences)")
            self._pairs.append((_sequence(seq, at), float(value), at))

    def _entries(self):
        return self._pairs


class BannedSequences(_SequenceProcessor):
    """Ban the last token of a sequence (-> -inf) when the history ends with its other tokens.

    Contract (Hugging Face's ``NoBadWordsLogitsProcessor``, ``bad_words_ids``): for each listed
    sequence ``[t1, ..., tn]``, ``tn`` is set to -inf in every row whose ``input_ids`` (prompt
    included) end with ``t1 .. t(n-1)``, so the sequence can never be completed; a one-token
    sequence is banned at every step. Nothing else changes. Identical to Hugging Face on
    unpadded input, except that Hugging Face's ``generate`` drops a one-token sequence that is
    the end-of-text token, and samplekit bans exactly what is listed. A prefix that reaches into
    left padding does not match. A sequence is a list of token ids or text (tokenized with
    ``ctx.tokenizer`` when the generation starts). For text that must not appear however it is
    tokenized, use ``banned_strings``. Each row may carry its own list.

    >>> BannedSequences(sequences=[[1, 2], [3]])(torch.tensor([[0, 1]]), torch.zeros(1, 4))
    tensor([[0., 0., -inf, -inf]])
    """

    name = "banned_sequences"
    aliases = ("bad_words_ids",)
    params = (Param("sequences", "json", [], "token sequences (lists of token ids, or text) that must not be "
                    "completed", per_row=True),)
    neutral = {"sequences": []}
    is_filter = True

    def __init__(self, **values):
        super().__init__(**values)
        where = f"{self.name}.sequences"
        if not isinstance(self.sequences, (list, tuple)):
            raise ParameterError(f"{where}: {short_repr(self.sequences)} is not allowed; expected a list, each item "
                                 f"{_SEQUENCE}")
        self._items = [(_sequence(seq, f"{where}[{i}]"), float("-inf"), f"{where}[{i}]")
                       for i, seq in enumerate(self.sequences)]

    def _entries(self):
        return self._items


@hookimpl
def register_processors(register):
    register(SequenceBias)
    register(BannedSequences)
