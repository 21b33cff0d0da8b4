"""What every selector needs: the row check, and exact inverse-CDF sampling.

A selector reads each row's maximum anyway, so checking it is free: ``check_rows(row_max)``
raises ``EmptyRowError`` for a row whose every logit is -inf (the chain masked everything) and
``NonFiniteRowError`` for a row holding NaN or +inf (a broken model or processor), before any
token is picked. The chain turns both into a ``GenerationError`` naming the step, the rows and
the chain. So no selector ever returns an id outside ``[0, V)`` or picks a NaN.
"""

from __future__ import annotations

import math

import torch

from samplekit.errors import GenerationError

__all__ = ["EmptyRowError", "NonFiniteRowError", "RowError", "check_rows", "inverse_cdf_sample"]


class RowError(GenerationError):
    """Some rows cannot be selected from; ``rows`` lists them (indices in the batch)."""

    what = "cannot be selected from"

    def __init__(self, rows: list[int]):
        super().__init__(f"row(s) {rows} {self.what}")
        self.rows = rows


class EmptyRowError(RowError):
    """Every logit of some rows is -inf: nothing can be selected."""

    what = "hold only -inf logits; nothing can be selected"


class NonFiniteRowError(RowError):
    """Some rows hold NaN or +inf logits: no distribution can be formed."""

    what = "hold NaN or +inf logits"


def check_rows(row_max: torch.Tensor) -> None:
    """Raise ``EmptyRowError`` when a row's maximum is -inf, ``NonFiniteRowError`` when it is
    NaN or +inf (``amax`` propagates NaN). One reduction and one sync in the common case; the
    rows are found only when something is wrong (a sum of huge finite maxima that overflows
    is looked at closely and passes)."""
    if math.isfinite(row_max.sum(dtype=torch.float64).item()):
        return
    row_max = row_max.flatten()
    bad = ~torch.isfinite(row_max)
    if not bad.any():
        return
    wild = (torch.isnan(row_max) | torch.isposinf(row_max)).nonzero().flatten().tolist()
    if wild:
        raise NonFiniteRowError(wild)
    raise EmptyRowError(bad.nonzero().flatten().tolist())


def inverse_cdf_sample(scores: torch.Tensor, uniforms: torch.Tensor, row_max: torch.Tensor | None = None,
                       *, clamp: bool = True) -> torch.Tensor:
    """One token per row from softmax(scores): the first column whose running sum of
    exp(score - row max) exceeds ``u * total``. ``scores [B, n]``, ``uniforms [B, 1]`` in
    [0, 1); returns positions ``[B, 1]``. Rows must have passed ``check_rows``. -inf scores
    add exactly 0, so they are never drawn.

    ``clamp`` keeps the target below the total, so the last token of non-zero weight is the
    furthest. Without it that holds when ``u`` comes from a CPU generator and the total is at
    least 1 (the row's maximum adds exp(0) = 1): such a ``u`` is a multiple of 2^-24 below 1,
    and ``u * total`` then lies more than half a float32 spacing below the total."""
    if row_max is None:
        row_max = scores.amax(dim=-1, keepdim=True)  # (B, 1)
    cdf = (scores - row_max).float().exp_().cumsum_(dim=-1)  # (B, n) unnormalised
    total = cdf[:, -1:]
    target = uniforms * total
    if clamp:
        target = torch.minimum(target, torch.nextafter(total, total.new_zeros(())))
    return torch.searchsorted(cdf, target, right=True)
