"""Checked mode: verify what processors and selectors return, naming the one at fault.

Unchecked, a run verifies shapes, dtypes and devices on its first step only, which costs nothing
measurable in the loop. Checked (``Chain(checked=True)`` or ``SAMPLEKIT_CHECKED=1``), every step
verifies the model's logits, every processor's output (no NaN introduced, input not written)
and the selector's tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from samplekit.errors import GenerationError, ProcessorContractError
from samplekit.processor import Processor


def who(p: Processor) -> str:
    provider = getattr(p, "provider", None)
    return f"processor {p.name!r} ({provider.describe()})" if provider else f"processor {p.name!r}"


def verify_logits(scores: torch.Tensor, step: int) -> None:
    """The model's logits hold no NaN and no +inf."""
    bad = torch.isnan(scores) | torch.isposinf(scores)
    if bad.any():
        rows = bad.any(dim=-1).nonzero().flatten().tolist()
        raise GenerationError(f"step {step}: the model's logits hold NaN or +inf in row(s) {rows[:10]}; "
                              "its weights or inputs are broken (nothing was sampled)")


def verify_scores(p: Processor, given: torch.Tensor, out: Any, before: torch.Tensor | None, step: int) -> None:
    """``out`` keeps ``given``'s shape, dtype and device; with ``before`` (a copy of the input
    taken before the call), also no NaN or +inf introduced and the input not written."""
    where = f"step {step}: {who(p)}"
    if not isinstance(out, torch.Tensor):
        raise ProcessorContractError(f"{where} returned {type(out).__name__}, not a tensor")
    for attr in ("shape", "dtype", "device"):
        if getattr(out, attr) != getattr(given, attr):
            raise ProcessorContractError(
                f"{where} changed the scores' {attr} from {getattr(given, attr)} to {getattr(out, attr)}"
            )
    if before is None:
        return
    if torch.isnan(out).any() and not torch.isnan(before).any():
        raise ProcessorContractError(f"{where} introduced NaN into the scores")
    if torch.isposinf(out).any() and not torch.isposinf(before).any():
        raise ProcessorContractError(f"{where} introduced +inf into the scores")
    if not torch.equal(given.nan_to_num(), before.nan_to_num()):
        raise ProcessorContractError(f"{where} wrote its input scores in place; return a new tensor instead")


def verify_tokens(p: Processor, scores: torch.Tensor, tokens: Any, step: int) -> None:
    """A selector returned a LongTensor ``[B]`` of ids in ``[0, V)`` whose logits are finite."""
    where = f"step {step}: selector {who(p)}"
    b, v = scores.shape
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long or tuple(tokens.shape) != (b,):
        shown = f"{tokens.dtype} of shape {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else \
            type(tokens).__name__
        raise ProcessorContractError(f"{where} returned {shown}; expected a LongTensor [{b}]")
    if ((tokens < 0) | (tokens >= v)).any():
        raise ProcessorContractError(f"{where} returned ids {tokens.tolist()[:10]} outside [0, {v})")
    picked = scores.gather(-1, tokens[:, None].to(scores.device)).squeeze(-1)
    if not torch.isfinite(picked).all():
        raise ProcessorContractError(f"{where} picked ids {tokens.tolist()[:10]} whose logits are "
                                     f"{picked.tolist()[:10]}; a selector picks finite logits only")
