"""Teacher-forced forward passes: the model's own logits for every token of a text.

A document is a list of token ids; its targets are the tokens from ``first`` on, each predicted
from the tokens before it. A document longer than the model's context is read in windows: the
first window reaches as far as the context allows, each later one adds ``stride`` targets
(default half the context) and sees the ``context`` tokens before its last target, so every
target is predicted once, from at least ``context - stride + 1`` tokens (or all before it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from samplekit.engine import model_context_length


def windows(length: int, first: int, context: int, stride: int | None = None) -> list[tuple[int, int, int]]:
    """``(a, lo, hi)`` per window: feed tokens ``[a, hi - 1)``, keep the targets ``[lo, hi)``."""
    stride = stride or max(1, context // 2)
    out, lo = [], max(first, 1)
    while lo < length:
        hi = min(length, max(lo + stride, context + 1))
        out.append((max(0, hi - 1 - context), lo, hi))
        lo = hi
    return out


@torch.inference_mode()
def teacher_forced(model, docs: Sequence[Sequence[int]], firsts: Sequence[int], *, batch_size: int = 16,
                   context: int | None = None) -> Iterator[tuple[list[int], list[int], torch.Tensor]]:
    """Yield ``(doc_index, target_index, logits [n, V])`` batches covering every target of every
    document once (in document order, targets ascending). Right padding is harmless: attention is
    causal, so padding after a position never reaches it."""
    context = context or model_context_length(model) or max(len(d) for d in docs)
    items = [(d, a, lo, hi) for d, (doc, first) in enumerate(zip(docs, firsts))
             for a, lo, hi in windows(len(doc), first, context)]
    device = _device(model)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            width = max(hi - 1 - a for _, a, _, hi in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T), right-padded
            for row, (d, a, _, hi) in enumerate(chunk):
                ids[row, :hi - 1 - a] = torch.as_tensor(docs[d][a:hi - 1])
            logits = model(ids.to(device)).float()  # (B, T, V)
            rows = [(row, t - 1 - a) for row, (_, a, lo, hi) in enumerate(chunk) for t in range(lo, hi)]
            index = torch.tensor(rows, device=logits.device)
            yield ([d for d, _, lo, hi in chunk for _ in range(lo, hi)],
                   [t for _, _, lo, hi in chunk for t in range(lo, hi)],
                   logits[index[:, 0], index[:, 1]])  # (n, V)
    finally:
        model.train(was_training)


def token_nlls(model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], *,
               batch_size: int = 16) -> list[list[float]]:
    """The model's negative log-likelihood (nats) of each continuation token given the prompt
    and the continuation so far: one list per continuation (empty for an empty one)."""
    docs = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    out: list[list[float]] = [[] for _ in docs]
    for doc_index, targets, logits in teacher_forced(model, docs, [len(p) for p in prompts],
                                                      batch_size=batch_size):
        gold = torch.tensor([docs[d][t] for d, t in zip(doc_index, targets)], device=logits.device)
        logits = logits.double()
        nll = logits.logsumexp(-1) - logits.gather(-1, gold[:, None]).squeeze(-1)  # (n,)
        for d, value in zip(doc_index, nll.tolist()):
            out[d].append(value)
    return out


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
