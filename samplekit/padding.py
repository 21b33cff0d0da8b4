"""Ragged prompts as one batch: right-aligned token ids with padding in front, the attention mask
that hides the padding, and each row's positions counted from its first real token."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_padded(prompts: Sequence[Sequence[int]], device: torch.device | str | None = None,
                width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [B, W], mask [B, W])``: each prompt right-aligned in ``width`` columns (default the
    longest prompt's), padding id 0 in front, ``mask`` False on the padding."""
    width = max(map(len, prompts), default=0) if width is None else width
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.as_tensor(p), True
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``[B, S]`` for a left-padded ``mask``: 0 at each row's first real token (and
    on its padding, which the mask hides), as transformers' ``generate`` makes them."""
    return (mask.long().cumsum(1) - 1).clamp_(min=0)
