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
        """The chain's candidate fast path: ``values``/``indices`` ``[B, n]`` in token-id order.
        The CDF then adds the same non-zero terms in the same order as over the whole vocabulary,
        so the same uniform draws the same token (up to last-bit rounding, see samplekit.chain)."""
        row_max = values.amax(dim=-1, keepdim=True)  # (B, 1)
        check_rows_not_empty(row_max)
        cdf = _unnormalised_cdf(values, row_max)
        return indices.gather(-1, _search(cdf, ctx.random.uniform(1, values.device))).view(-1)


def _unnormalised_cdf(scores: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
    """Running sums of exp(score - row max), float32; -inf scores add exactly 0."""
    return (scores - row_max).float().exp_().cumsum_(dim=-1)


def _search(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``[B, 1]`` positions: the first column whose running sum exceeds ``u * total``. The
    target is kept below the total, so the last token of non-zero weight is the furthest."""
    total = cdf[:, -1:]
    target = torch.minimum(u * total, torch.nextafter(total, total.new_zeros(())))
    return torch.searchsorted(cdf, target, right=True)


@hookimpl
def register_processors(register):
    register(Greedy)
    register(Multinomial)
