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
        # Subtracting the max keeps exp() from overflowing; -inf logits become exactly 0.
        cdf = (scores - row_max).float().exp_().cumsum_(dim=-1)  # (B, V) unnormalised CDF
        total = cdf[:, -1:]
        u = ctx.random.uniform(1, scores.device) * total  # (B, 1), in [0, total)
        u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
        return torch.searchsorted(cdf, u, right=True).squeeze(-1)

    def select_candidates(self, input_ids, values, indices, ctx):
        """The chain's candidate fast path: ``values``/``indices`` ``[B, n]`` in token-id order.
        The CDF then adds the same non-zero terms in the same order as over the whole vocabulary,
        so the same uniform draws the same token (up to last-bit rounding, see samplekit.chain).
        The arithmetic is ``select``'s, in fewer operations: this runs once per token."""
        row_max = values.amax(dim=-1, keepdim=True)  # (B, 1)
        check_rows_not_empty(row_max)
        cdf = (values - row_max).float().exp_().cumsum_(dim=-1)  # (B, n)
        total = cdf[:, -1:]
        u = ctx.random.uniform(1, values.device).mul_(total)
        u = torch.minimum(u, torch.nextafter(total, total.new_zeros(())))
        return indices.gather(-1, torch.searchsorted(cdf, u, right=True)).view(-1)


@hookimpl
def register_processors(register):
    register(Greedy)
    register(Multinomial)
