"""Running a chain on given logits: the lab's only calls into a chain's run.

Both take a batch of rows that share one step (tokens generated so far), each row seeded on
its own, so a row's result does not depend on the rows beside it. When ``Chain.apply`` takes
seeds and per-row steps, these become one-line wrappers around it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from samplekit.chain import Chain, ChainRun


def _start(chain: Chain, batch_size: int, seeds: Sequence[int], step: int, context: dict) -> ChainRun:
    run = chain.start(batch_size, seeds=list(seeds), **context)
    run.ctx.step = step
    return run


def process(chain: Chain, input_ids: torch.Tensor, scores: torch.Tensor, *, seeds: Sequence[int],
            step: int = 0, **context) -> torch.Tensor:
    """Every logits processor of ``chain`` on ``scores [B, V]`` after ``input_ids [B, T]``: ``[B, V]``."""
    return _start(chain, scores.shape[0], seeds, step, context).process(input_ids, scores)


def select(chain: Chain, input_ids: torch.Tensor, scores: torch.Tensor, *, seeds: Sequence[int],
           step: int = 0, **context) -> torch.Tensor:
    """The whole chain, selector included: the chosen token of each row ``[B]``."""
    return _start(chain, scores.shape[0], seeds, step, context).select(input_ids, scores)
