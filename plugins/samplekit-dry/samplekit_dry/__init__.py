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

``sequence_breakers`` are token ids or strings; strings are tokenized with ``ctx.tokenizer``
when the generation starts (the last token of their encoding, as text-generation-webui does) and
ignored when there is no tokenizer. ``penalty_last_n`` limits the search to the last n tokens
(-1: the whole history; 0: DRY off). Padding positions (``ctx.attention_mask`` False) are skipped:
the tokens on either side of padding count as adjacent.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from samplekit import Param, Processor, hookimpl

__version__ = "0.1.0"

MAX_MATCH = 50  # the longest repeat measured (text-generation-webui's cap)
_FLOAT32_MAX_LOG = 88.7228391  # log(FLT_MAX), llama.cpp's bound on the exponent


def _encode(tokenizer: Any, text: str) -> list[int]:
    try:
        return list(tokenizer.encode(text, allowed_special="all"))  # tiktoken
    except TypeError:
        return list(tokenizer.encode(text))


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
        Param("multiplier", "float", 0.8, "strength of the penalty; 0 turns DRY off", low=0.0),
        Param("base", "float", 1.75, "growth of the penalty with each token of repeat beyond allowed_length",
              low=1.0, low_open=True),
        Param("allowed_length", "int", 2, "the longest repeat that goes unpenalised", low=1),
        Param("sequence_breakers", "token_list", ("\n", ":", '"', "*"),
              "tokens (ids or strings) a repeat never crosses"),
        Param("penalty_last_n", "int", -1, "how many of the last tokens to search; -1: all, 0: off", low=-1),
    )
    needs_history = True
    shared_state = True  # the breakers are the same for every row

    def start(self, batch_size, ctx):
        ids = set()
        for breaker in self.sequence_breakers:
            if isinstance(breaker, int):
                ids.add(breaker)
            elif ctx.tokenizer is not None:
                encoded = _encode(ctx.tokenizer, breaker)
                if encoded:
                    ids.add(encoded[-1])
        return {"breakers": torch.tensor(sorted(ids), dtype=torch.long)}

    def process(self, input_ids, scores, ctx):
        if self.multiplier == 0.0 or self.penalty_last_n == 0 or input_ids is None or input_ids.shape[1] < 2:
            return scores
        b, v = scores.shape
        state = ctx.state if isinstance(ctx.state, dict) else self.start(b, ctx)
        x, valid = _right_aligned(input_ids.to(scores.device), ctx.attention_mask)  # (B, T), (B, T)
        if self.penalty_last_n > 0:
            x, valid = x[:, -self.penalty_last_n:], valid[:, -self.penalty_last_n:]
        n = x.shape[1]
        if n < 2:
            return scores
        breaker = torch.isin(x, state["breakers"].to(x.device)) & valid  # (B, n)

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
        length = torch.where(usable & (length >= self.allowed_length), length, 0)
        longest = torch.zeros(b, v, dtype=torch.long, device=x.device)
        longest.scatter_reduce_(1, following.clamp(max=v - 1), length, reduce="amax")  # (B, V)

        hit = longest > 0
        if not hit.any():
            return scores
        exponent = (longest - self.allowed_length).clamp(min=0).to(torch.float32)
        exponent = exponent.clamp(max=_FLOAT32_MAX_LOG / math.log(self.base))
        penalty = self.multiplier * torch.pow(torch.tensor(self.base, dtype=torch.float32), exponent)  # (B, V)
        lowered = (scores.float() - penalty).to(scores.dtype)
        return torch.where(hit, lowered, scores)


@hookimpl
def register_processors(register):
    register(DRY)
