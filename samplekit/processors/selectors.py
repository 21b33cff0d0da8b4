"""Selectors: greedy (argmax) and multinomial sampling."""

from __future__ import annotations

import torch

from samplekit.errors import GenerationError
from samplekit.hookspecs import hookimpl
from samplekit.processor import Selector


class EmptyRowError(GenerationError):
    """Every logit of some rows is -inf: nothing can be selected. ``rows`` lists them."""

    def __init__(self, rows: list[int]):
        super().__init__(f"every logit of row(s) {rows} is -inf; nothing can be selected")
        self.rows = rows


_NEG_INF = float("-inf")


def check_rows_not_empty(row_max: torch.Tensor) -> None:
    """Raise EmptyRowError when a row's maximum is -inf (the chain masked every token).
    One reduction and one sync in the common case; the rows are found only on error."""
    if row_max.amin().item() == _NEG_INF:
        raise EmptyRowError(torch.isneginf(row_max).flatten().nonzero().flatten().tolist())


class Greedy(Selector):
    """Pick each row's largest logit (the lowest token id among ties)."""

    name = "greedy"
    aliases = ("argmax",)
    keeps_argmax = True

    def select(self, input_ids, scores, ctx):
        row_max, tokens = scores.max(dim=-1)  # (B,), (B,)
        check_rows_not_empty(row_max)
        return tokens

    def select_candidates(self, input_ids, values, indices, ctx):
        """The chain's candidate fast path: ``values``/``indices`` ``[B, n]`` in token-id order,
        so the first maximum is still the lowest token id among ties."""
        return indices.gather(-1, self.select(input_ids, values, ctx).unsqueeze(-1)).squeeze(-1)


class Multinomial(Selector):
    """Sample each row from softmax(logits), drawing only from the run's generator(s).

    Exact inverse-CDF sampling: one uniform per row from that row's generator, so a seed
    reproduces a run and a row's draw does not depend on the rest of its batch. Tokens whose
    logit is -inf are never drawn.
    """

    name = "multinomial"
    aliases = ("sample", "dist")
    keeps_argmax = False
    vocab_symmetric = True
    random = True

    def select(self, input_ids, scores, ctx):
        row_max = scores.amax(dim=-1, keepdim=True)  # (B, 1)
        check_rows_not_empty(row_max)
        cdf = _unnormalised_cdf(scores, row_max)
        return _search(cdf, ctx.random.uniform(1, scores.device)).squeeze(-1)

    def select_candidates(self, input_ids, values, indices, ctx):
        """The chain's candidate fast path: ``values``/``indices`` ``[B, n]`` in token-id order,
        every row holding a finite value (the chain checks). The CDF then adds the same non-zero
        terms in the same order as over the whole vocabulary, so the same uniform draws the same
        token (up to last-bit rounding, see samplekit.chain)."""
        cdf = _unnormalised_cdf(values, values.amax(dim=-1, keepdim=True))
        u = ctx.random.uniform(1, values.device)
        return indices.gather(-1, _search(cdf, u, clamp=u.device.type != "cpu")).view(-1)


def _unnormalised_cdf(scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
    """Running sums of exp(score - row max), float32; -inf scores add exactly 0."""
    return (scores - row_max).float().exp_().cumsum_(dim=-1)


def _search(cdf: torch.Tensor, u: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """``[B, 1]`` positions: the first column whose running sum exceeds ``u * total``; so the
    last token of non-zero weight is the furthest, the target must stay below the total.

    ``clamp`` keeps it there. Without it, that holds when ``u`` comes from a CPU generator and
    the total is at least 1 (the row's maximum adds exp(0) = 1): such a ``u`` is a multiple of
    2^-24 below 1, and ``u * total`` then lies more than half a float32 spacing below the total,
    so rounding cannot reach it."""
    total = cdf[:, -1:]
    target = u * total
    if clamp:
        target = torch.minimum(target, torch.nextafter(total, total.new_zeros(())))
    return torch.searchsorted(cdf, target, right=True)


@hookimpl
def register_processors(register):
    register(Greedy)
    register(Multinomial)
