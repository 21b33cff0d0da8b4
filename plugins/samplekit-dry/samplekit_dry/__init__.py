"""DRY, "don't repeat yourself": penalise the tokens that would extend a repeat of earlier text.

The semantics follow the reference implementations (koboldcpp, text-generation-webui,
llama.cpp): look at the end of the history. Wherever the last token occurred before, measure
how far back the text before that occurrence matches the text before the end (the match length
``n``, counting the last token itself, at most 50, never across a sequence breaker). The token
that followed that earlier occurrence would extend the repeat; if ``n >= allowed_length`` its
logit is lowered by ``multiplier * base ** (n - allowed_length)``, using the longest match that
token would extend. Nothing is penalised when the last token is a sequence breaker, and a
breaker is never penalised. As in llama.cpp the exponent is capped so ``base ** exponent`` stays
within float32.

``sequence_breakers`` are token ids, strings, or token sequences (lists of token ids). Strings
are tokenized with ``ctx.tokenizer`` when the generation starts (the last token of their
encoding, as text-generation-webui does) and ignored when there is no tokenizer. A token sequence
``[t1, ..., tm]`` acts like a one-token breaker wherever it occurs complete: a repeat never
crosses any of its tokens, none of them is penalised, and nothing is when the history ends with
it (llama.cpp likewise stops a repeat at a breaker that tokenizes to several tokens); an
incomplete occurrence breaks nothing.
``penalty_last_n`` limits the search to the last n tokens (-1: the whole history; 0: DRY off).
Padding positions (``ctx.attention_mask`` False) are skipped: the tokens on either side of
padding count as adjacent.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from samplekit import TOKEN_ID_LIMIT, Param, ParameterError, Processor, hookimpl
from samplekit.messages import short_repr

__version__ = "0.1.0"

MAX_MATCH = 50  # the longest repeat measured (text-generation-webui's cap)
_FLOAT32_MAX_LOG = 88.7228391  # log(FLT_MAX), llama.cpp's bound on the exponent


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:
        return list(tokenizer.encode(text, allowed_special="all"))  # tiktoken
    except TypeError:
        return list(tokenizer.encode(text))


def _breaker(item: Any, where: str) -> int | str | tuple[int, ...]:
    """One validated breaker: a token id, a non-empty string, or a tuple of token ids."""
    def is_id(t):
        return isinstance(t, int) and not isinstance(t, bool) and 0 <= t < TOKEN_ID_LIMIT

    if is_id(item) or (isinstance(item, str) and item):
        return item
    if isinstance(item, (list, tuple)) and item and all(is_id(t) for t in item):
        return tuple(item) if len(item) > 1 else item[0]
    raise ParameterError(f"{where}: {short_repr(item)} is not allowed; expected a token id in [0, 2**31), a "
                         "non-empty string, or a non-empty list of token ids (a multi-token breaker)")


def _occurrences(x: torch.Tensor, valid: torch.Tensor, sequences: list[tuple[int, ...]]) -> torch.Tensor:
    """``[B, n]``: the positions covered by a complete occurrence of one of ``sequences`` among
    the real tokens of ``x`` (``valid``)."""
    covered = torch.zeros_like(valid)
    for seq in sequences:
        m = len(seq)
        if m > x.shape[1]:
            continue
        want = torch.tensor(seq, dtype=x.dtype, device=x.device)
        starts = ((x.unfold(1, m, 1) == want) & valid.unfold(1, m, 1)).all(dim=-1)  # (B, n-m+1)
        for offset in range(m):  # mark every token of each occurrence
            covered[:, offset:offset + starts.shape[1]] |= starts
    return covered


def _right_aligned(ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's real tokens moved to the right end, in order; padding to the left."""
    if mask is None:
        return ids, torch.ones_like(ids, dtype=torch.bool)
    mask = mask[:, -ids.shape[1]:].to(device=ids.device, dtype=torch.bool)
    order = torch.sort(mask.to(torch.int8), dim=1, stable=True).indices  # (B, T): padding first
    return ids.gather(1, order), mask.gather(1, order)


class DRY(Processor):
    """Don't repeat yourself: penalise tokens that would extend a repeat of earlier text, exponentially in its length.

    Contract: lowers the logits of the tokens that would continue a repeat of at least
    ``allowed_length`` tokens, leaves every other logit unchanged; rows are independent.

    >>> ids = torch.tensor([[5, 6, 7, 8, 5, 6, 7]])
    >>> out = DRY(multiplier=1.0, base=2.0, allowed_length=2)(ids, torch.zeros(1, 10))
    >>> out[0, 8].item()  # 8 would extend the repeat "5 6 7": n = 3, penalty 1 * 2 ** (3 - 2)
    -2.0
    """

    name = "dry"
    params = (
        Param("multiplier", "float", 0.8, "strength of the penalty; 0 turns DRY off", low=0.0, per_row=True),
        Param("base", "float", 1.75, "growth of the penalty with each token of repeat beyond allowed_length",
              low=1.0, low_open=True, per_row=True),
        Param("allowed_length", "int", 2, "the longest repeat that goes unpenalised", low=1, per_row=True),
        Param("sequence_breakers", "json", ["\n", ":", '"', "*"],
              "what a repeat never crosses: token ids, strings, or lists of token ids (multi-token breakers)"),
        Param("penalty_last_n", "int", -1, "how many of the last tokens to search; -1: all, 0: off", low=-1,
              per_row=True),
    )
    needs_history = True
    shared_state = True  # the breakers are the same for every row
    neutral = {"multiplier": 0.0}

    def __init__(self, **values):
        super().__init__(**values)
        where = f"{self.name}.sequence_breakers"
        if not isinstance(self.sequence_breakers, (list, tuple)):
            raise ParameterError(f"{where}: {short_repr(self.sequence_breakers)} is not allowed; expected a list of "
                                 "token ids, strings, or lists of token ids")
        self._breakers = [_breaker(b, f"{where}[{i}]") for i, b in enumerate(self.sequence_breakers)]

    def start(self, batch_size, ctx):
        ids, sequences = set(), set()
        for breaker in self._breakers:
            if isinstance(breaker, int):
                ids.add(breaker)
            elif isinstance(breaker, tuple):
                sequences.add(breaker)
            elif ctx.tokenizer is not None:
                encoded = _encode(ctx.tokenizer, breaker)
                if encoded:
                    ids.add(encoded[-1])
        return {"breakers": torch.tensor(sorted(ids), dtype=torch.long), "sequences": sorted(sequences)}

    def process(self, input_ids, scores, ctx):
        """Each row with its own multiplier, base, allowed length and window (all per row)."""
        return self.by_row_values(ctx, lambda v: self._penalise(input_ids, scores, ctx, **v))

    def _penalise(self, input_ids, scores, ctx, multiplier: float, base: float, allowed_length: int,
                  penalty_last_n: int):
        if multiplier == 0.0 or penalty_last_n == 0 or input_ids is None or input_ids.shape[1] < 2:
            return scores
        b, v = scores.shape
        state = ctx.state if isinstance(ctx.state, dict) else self.start(b, ctx)
        x, valid = _right_aligned(input_ids.to(scores.device), ctx.attention_mask)  # (B, T), (B, T)
        if penalty_last_n > 0:
            x, valid = x[:, -penalty_last_n:], valid[:, -penalty_last_n:]
        n = x.shape[1]
        if n < 2:
            return scores
        breaker = torch.isin(x, state["breakers"].to(x.device)) & valid  # (B, n)
        if state.get("sequences"):
            breaker |= _occurrences(x, valid, state["sequences"])

        # L[b, i]: how many tokens ending at position i match the tokens ending at the last
        # position: x[i - k] == x[n-1 - k] for k = 0 .. L-1, within the real tokens, with no
        # breaker among x[n-1-k] for k >= 1 (k = 0 is the last token: a breaker there stops all).
        k = torch.arange(min(MAX_MATCH, n - 1), device=x.device)  # (K,)
        i = torch.arange(n - 1, device=x.device)  # (n-1,) earlier end positions
        j = i[None, :] - k[:, None]  # (K, n-1)
        jc = j.clamp(min=0)
        tail = n - 1 - k  # (K,)
        tail_ok = valid[:, tail] & ((k == 0)[None, :] | ~breaker[:, tail])  # (B, K)
        eq = (x[:, jc] == x[:, tail][:, :, None]) & valid[:, jc] & (j >= 0)[None] & tail_ok[:, :, None]
        length = eq.to(torch.long).cumprod(dim=1).sum(dim=1)  # (B, n-1): leading run of matches

        following = x[:, 1:]  # (B, n-1): the token after each earlier end position
        usable = valid[:, 1:] & ~breaker[:, 1:] & (following < v) & ~breaker[:, -1:] & valid[:, -1:]
        length = torch.where(usable & (length >= allowed_length), length, 0)
        longest = torch.zeros(b, v, dtype=torch.long, device=x.device)
        longest.scatter_reduce_(1, following.clamp(max=v - 1), length, reduce="amax")  # (B, V)

        hit = longest > 0
        if not hit.any():
            return scores
        exponent = (longest - allowed_length).clamp(min=0).to(torch.float32)
        exponent = exponent.clamp(max=_FLOAT32_MAX_LOG / math.log(base))
        penalty = multiplier * torch.pow(torch.tensor(base, dtype=torch.float32), exponent)  # (B, V)
        lowered = (scores.float() - penalty).to(scores.dtype)
        return torch.where(hit, lowered, scores)


@hookimpl
def register_processors(register):
    register(DRY)
