"""What the candidate strategies share: finishing a step on a few candidates.

Candidates are ``values``/``indices`` ``[B, n]`` sorted by token id. In token-id order,
multinomial's inverse CDF adds the same non-zero terms in the same order as over the whole
vocabulary, so a seed draws the same token (up to last-bit rounding: a logit's exp may come from
the vectorised or the scalar kernel depending on its position, and normalising processors such
as top-p sum fewer zeros; a draw changes only when the uniform falls within that of a CDF step,
about once in 10^7 draws).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from samplekit.processor import Processor
from samplekit.selection import check_rows
from samplekit.strategy import promised

if TYPE_CHECKING:  # pragma: no cover
    from samplekit.chain import ChainRun

Pairs = list[tuple[Processor, int]]  # processors with their index in the chain


def runs_on_candidates(p: Processor) -> bool:
    """``p`` may run after the producer, on candidates: it has ``process_candidates`` or
    promises ``candidate_safe``."""
    return promised(p, "process_candidates") is not None or bool(promised(p, "candidate_safe"))


def selects_candidates(run_or_chain) -> bool:
    return promised(run_or_chain.selector, "select_candidates", "select") is not None


def select_among(run: "ChainRun", input_ids: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                 suffix: Pairs, checked: bool) -> torch.Tensor:
    """The processors after the producer, then the selector, on candidates in token-id order.
    ``select_candidates`` is promised finite rows: unless ``checked`` (the rows' maxima were
    read and found finite) and no processor ran since, the rows are checked here."""
    ctx, states = run.ctx, run.states
    for p, i in suffix:
        ctx.state = states[i]
        special = getattr(p, "process_candidates", None)
        values = special(input_ids, values, indices, ctx) if special else p.process(input_ids, values, ctx)
    if suffix or not checked:
        check_rows(values.amax(dim=-1))
    return run.chain.selector.select_candidates(input_ids, values, indices, run.selector_context())
