"""Each row's n largest logits, fast on the CPU (the top-k processor and strategy share it)."""

from __future__ import annotations

import torch


def largest(scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores.topk(n, dim=-1)``: each row's ``n`` largest values, largest first (NaN first of
    all), and their ids. On the CPU, for float32, numpy's partition finds them and only those
    ``n`` are sorted: 2 to 5 times faster than ``topk`` for a vocabulary of a few thousand. The
    values are the same; among values tied across the n-th place either may be taken (as with
    ``topk``; the strategy sends such a step to the dense path)."""
    vocab = scores.shape[-1]
    if scores.device.type != "cpu" or scores.dtype != torch.float32 or n >= vocab or scores.requires_grad:
        return scores.topk(n, dim=-1)
    import numpy

    found = torch.from_numpy(numpy.argpartition(scores.contiguous().numpy(), vocab - n, axis=-1)[:, vocab - n:])
    values, order = scores.gather(-1, found).sort(dim=-1, descending=True)  # (B, n)
    return values, found.gather(-1, order)
