"""Token-level steering: logit bias, banned tokens and banned strings."""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch

from samplekit.errors import ParameterError
from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor, StepContext, default_context


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:
        return list(tokenizer.encode(text, allowed_special="all"))  # tiktoken
    except TypeError:
        return list(tokenizer.encode(text))


def resolve_token(token: int | str, tokenizer: Any, where: str) -> int:
    """A token id, or the id of a string that the tokenizer encodes as exactly one token."""
    if isinstance(token, int):
        return token
    if tokenizer is None:
        raise ParameterError(f"{where}: {token!r} is a string, but there is no tokenizer to turn it into a "
                             "token id; give the token id instead")
    ids = _encode(tokenizer, token)
    if len(ids) != 1:
        raise ParameterError(f"{where}: {token!r} is {len(ids)} tokens {ids}, not one; give a single token "
                             "(or its id), or use banned_strings for a multi-token string")
    return ids[0]


def _check_vocab(name: str, max_id: int, vocab_size: int) -> None:
    if max_id >= vocab_size:
        raise ParameterError(f"{name}: token id {max_id} is outside the vocabulary of {vocab_size} tokens")


class _TokenProcessor(Processor):
    """Resolves its tokens at ``start`` (strings need ``ctx.tokenizer``); the state has no rows."""

    stateful = True
    shared_state = True  # the resolved tokens serve every row

    def _state(self, scores: torch.Tensor, ctx: StepContext | None):
        if ctx is not None and ctx.state is not None:
            return ctx.state
        return self.start(scores.shape[0], ctx or default_context(scores.shape[0]))


class LogitBias(_TokenProcessor):
    """Add a fixed bias to the logits of chosen tokens (by id, or by a string that is one token).

    Contract: ``logit[token] + bias`` for every listed token, in every row; a bias of -inf bans
    the token; other logits are unchanged; -inf logits stay -inf. Strings are resolved with
    ``ctx.tokenizer`` when the generation starts and must encode to exactly one token (otherwise
    a ParameterError naming the string); listing a token twice (by id and by string) is an error.
    Like Hugging Face's ``SequenceBiasLogitsProcessor`` restricted to one-token sequences.

    >>> LogitBias(bias={1: 2.0, 2: float("-inf")})(None, torch.zeros(1, 3))
    tensor([[0., 2., -inf]])
    """

    name = "logit_bias"
    params = (Param("bias", "token_bias", {}, "token id or single-token string -> added to its logit",
                    per_row=True),)
    shared_state = False  # one resolved bias per row (rows may carry their own)
    neutral = {"bias": {}}

    def __init__(self, **values):
        super().__init__(**values)
        for token, value in self.bias.items():
            if value == math.inf:
                raise ParameterError(f"{self.name}.bias: {token!r}: {value!r} is not allowed; expected a "
                                     "finite number or -inf (a ban)")

    def start(self, batch_size, ctx):
        """One resolved bias per row (a list; rows with the same processor share one object)."""
        made: dict[int, dict] = {}
        return [made[id(p)] if id(p) in made else made.setdefault(id(p), p._resolve(ctx))
                for p in self.row_processors(ctx)]

    def _resolve(self, ctx) -> dict:
        resolved: dict[int, tuple[Any, float]] = {}
        for token, value in self.bias.items():
            tid = resolve_token(token, ctx.tokenizer, f"{self.name}.bias")
            if tid in resolved:
                raise ParameterError(f"{self.name}.bias: {resolved[tid][0]!r} and {token!r} are the same token "
                                     f"({tid}); list it once")
            resolved[tid] = (token, value)
        add = [(t, v) for t, (_, v) in resolved.items() if v != -math.inf]
        return {
            "ids": torch.tensor([t for t, _ in add], dtype=torch.long),
            "values": torch.tensor([v for _, v in add], dtype=torch.float32),
            "banned": torch.tensor([t for t, (_, v) in resolved.items() if v == -math.inf], dtype=torch.long),
            "max_id": max(resolved, default=-1),
        }

    def process(self, input_ids, scores, ctx):
        rows = self._state(scores, ctx)
        first = rows[0] if rows else None
        if all(r is first for r in rows):
            return scores if first is None else self._add(first, scores)
        out = None
        for state in {id(r): r for r in rows}.values():  # each distinct bias on the batch, rows taking theirs
            mine = torch.tensor([r is state for r in rows], device=scores.device)[:, None]  # (B, 1)
            biased = self._add(state, scores)
            out = biased if out is None else torch.where(mine, biased, out)
        return out

    def _add(self, state: dict, scores: torch.Tensor) -> torch.Tensor:
        if state["max_id"] < 0:
            return scores
        _check_vocab(self.name, state["max_id"], scores.shape[-1])
        out = scores
        if len(state["ids"]):
            ids = state["ids"].to(scores.device)
            values = state["values"].to(scores.device, scores.dtype).expand(scores.shape[0], -1)  # (B, k)
            out = out.index_add(1, ids, values)
        if len(state["banned"]):
            out = out.index_fill(1, state["banned"].to(scores.device), float("-inf"))
        return out


class BannedTokens(_TokenProcessor):
    """Set the logits of the listed tokens (ids, or strings that are one token) to -inf.

    Contract: exactly the listed token ids become -inf in every row; nothing else changes.
    Strings are resolved with ``ctx.tokenizer`` when the generation starts and must encode to
    exactly one token (else a ParameterError naming the string; use ``banned_strings`` for
    longer text). Like Hugging Face's ``NoBadWordsLogitsProcessor`` with one-token words.

    >>> BannedTokens(tokens=[0, 2])(None, torch.zeros(1, 3))
    tensor([[-inf, 0., -inf]])
    """

    name = "banned_tokens"
    aliases = ("ban",)
    params = (Param("tokens", "token_list", (), "token ids or single-token strings to ban"),)
    is_filter = True

    def start(self, batch_size, ctx):
        ids = sorted({resolve_token(t, ctx.tokenizer, f"{self.name}.tokens") for t in self.tokens})
        return torch.tensor(ids, dtype=torch.long)

    def process(self, input_ids, scores, ctx):
        ids = self._state(scores, ctx)
        if not len(ids):
            return scores
        _check_vocab(self.name, int(ids[-1]), scores.shape[-1])
        return scores.index_fill(1, ids.to(scores.device), float("-inf"))


def token_bytes(tokenizer: Any, exclude: set[int]) -> list[bytes | None]:
    """Each token id's bytes (None for special tokens, ``exclude`` and ids the tokenizer lacks)."""
    size = getattr(tokenizer, "n_vocab", None) or len(tokenizer)
    special = set(exclude)
    for text in getattr(tokenizer, "special_tokens_set", ()):
        special.add(tokenizer.encode_single_token(text))
    one = getattr(tokenizer, "decode_single_token_bytes", None)
    table: list[bytes | None] = []
    for i in range(size):
        if i in special:
            table.append(None)
            continue
        try:
            table.append(one(i) if one is not None else tokenizer.decode([i]).encode("utf-8"))
        except (KeyError, ValueError):
            table.append(None)
    return table


class BannedStrings(_TokenProcessor):
    """Ban every token that would complete one of the given strings in the decoded text (-> -inf).

    Contract: at each step, a token is set to -inf iff appending its bytes to the row's decoded
    history makes one of ``strings`` appear ending inside that token: either the token's bytes
    contain the string, or the history's text ends with the string's first k bytes and the
    token's bytes start with the rest. So every tokenization of the string is blocked at the
    token that would complete it (in particular its canonical tokenization's last token, once the
    history ends with the others). Matching is on bytes, case-sensitive, without normalisation.

    Limits: the string is blocked only at its completion; a prefix of it may be generated and
    then must be continued differently (no backtracking). Special tokens (and
    ``ctx.eos_token_ids``) never complete a string and break the text. A string already in the
    prompt is not undone. Needs ``ctx.tokenizer`` (a tiktoken encoding, or any object with
    ``decode``); building the byte table costs one pass over the vocabulary, once per tokenizer
    (later generations with the same tokenizer reuse it).
    """

    name = "banned_strings"
    params = (Param("strings", "str_list", (), "text that must not appear in the output"),)
    is_filter = True
    needs_history = True

    def __init__(self, **values):
        super().__init__(**values)
        if any(s == "" for s in self.strings):
            raise ParameterError(f"{self.name}.strings: '' is not allowed; expected non-empty strings")
        self._built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> eos -> tables

    def start(self, batch_size, ctx):
        if not self.strings:
            return {"strings": []}
        if ctx.tokenizer is None:
            raise ParameterError(f"{self.name}.strings: {self.strings[0]!r} needs a tokenizer to be matched, "
                                 "and this generation has none; use banned_tokens with token ids instead")
        # The tables depend only on the tokenizer and the end-of-text ids: built once per pair and
        # shared (read-only) by every generation that follows.
        eos = tuple(sorted(ctx.eos_token_ids))
        try:
            built = self._built.setdefault(ctx.tokenizer, {})
        except TypeError:  # a tokenizer that cannot be weakly referenced: build every time
            built = {}
        if eos not in built:
            built[eos] = self._build(ctx.tokenizer, set(eos))
        return built[eos]

    def _build(self, tokenizer, eos: set[int]) -> dict:
        table = token_bytes(tokenizer, eos)
        by_first: dict[int, list[int]] = {}
        for i, b in enumerate(table):
            if b:
                by_first.setdefault(b[0], []).append(i)
        strings = []
        for text in dict.fromkeys(self.strings):
            s = text.encode("utf-8")
            contains = [i for i, b in enumerate(table) if b and s in b]
            # completes[k]: tokens that finish s when the history's text ends with s[:k].
            completes = {k: torch.tensor([i for i in by_first.get(s[k], ()) if table[i].startswith(s[k:])],
                                         dtype=torch.long)
                         for k in range(1, len(s))}
            strings.append((s, torch.tensor(contains, dtype=torch.long), completes))
        longest = max(len(s) for s, _, _ in strings)
        return {"strings": strings, "table": table, "tail_tokens": longest - 1}

    def _tail(self, row: list[int], table: list[bytes | None]) -> bytes:
        parts = []
        for t in reversed(row):
            b = table[t] if 0 <= t < len(table) else None
            if b is None:  # a special token (or one the tokenizer lacks) breaks the text
                break
            parts.append(b)
        return b"".join(reversed(parts))

    def process(self, input_ids, scores, ctx):
        state = self._state(scores, ctx)
        if not state["strings"]:
            return scores
        vocab_size = scores.shape[-1]
        n = min(state["tail_tokens"], input_ids.shape[1]) if input_ids is not None else 0
        rows = input_ids[:, input_ids.shape[1] - n:].tolist() if n else [[] for _ in range(scores.shape[0])]
        mask = ctx.attention_mask if ctx is not None else None
        if mask is not None and n:
            real = mask[:, mask.shape[1] - n:].tolist()
            rows = [[t for t, r in zip(row, m) if r] for row, m in zip(rows, real)]
        banned = torch.zeros(scores.shape[0], vocab_size + 1, dtype=torch.bool)
        for r, row in enumerate(rows):
            tail = self._tail(row, state["table"])
            for s, contains, completes in state["strings"]:
                for ids in [contains] + [completes[k] for k in range(1, len(s)) if tail.endswith(s[:k])]:
                    banned[r, ids.clamp(max=vocab_size)] = True
        banned = banned[:, :vocab_size].to(scores.device)
        return scores.masked_fill(banned, float("-inf"))


@hookimpl
def register_processors(register):
    register(LogitBias)
    register(BannedTokens)
    register(BannedStrings)
