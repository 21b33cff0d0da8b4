"""Top-k filtering."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.largest import largest
from samplekit.params import INT_LIMIT, MIN_TOKENS_TO_KEEP, Param
from samplekit.processor import Processor


class TopK(Processor):
    """Keep the k largest logits of each row and set the rest to -inf (ties at the k-th kept).

    Contract: at least min(k, finite count) finite logits stay per row, at most k plus those tied
    with the k-th value; k >= vocabulary size is a no-op; idempotent. ``min_tokens_to_keep``
    raises k to at least that many (Hugging Face's ``TopKLogitsWarper``: ``max(k,
    min_tokens_to_keep)``).
    """

    name = "top_k"
    primary = "k"
    params = (Param("k", "int", 50, "how many of the largest logits to keep", low=1, per_row=True),
              MIN_TOKENS_TO_KEEP)
    neutral = {"k": INT_LIMIT}  # at least the vocabulary: keeps everything
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # on candidates: top-k of the finite logits, as on the dense row

    def keeps_top(self, vocab_size: int) -> int | None:
        """How many of the largest logits survive (ties aside), or None when all do: what the
        chain's candidate fast path samples among (samplekit.chain)."""
        k = max(self.k, self.min_tokens_to_keep)
        return k if k < vocab_size else None

    def keeps_top_rows(self, vocab_size: int, ctx) -> list[int | None]:
        """``keeps_top`` for each row of ``ctx`` (rows carry their own k)."""
        ks = (max(k, self.min_tokens_to_keep) for k in self.row_values(ctx, "k"))
        return [k if k < vocab_size else None for k in ks]

    def process(self, input_ids, scores, ctx):
        k = self.row_value(ctx, "k", scores)
        vocab, least = scores.shape[-1], self.min_tokens_to_keep
        if least > 1:  # keep at least min_tokens_to_keep
            k = k.clamp(min=least) if isinstance(k, torch.Tensor) else max(k, least)
        if not isinstance(k, torch.Tensor):
            if k >= vocab:
                return scores
            kth = scores.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)  # (B, 1)
            return scores.masked_fill(scores < kth, float("-inf"))
        cut = [max(k, least) for k in self.row_values(ctx, "k") if max(k, least) < vocab]  # rows keeping all: no topk
        if not cut:
            return scores
        most = max(cut)
        top = largest(scores, most)[0]  # (B, most), largest first
        kth = top.gather(-1, (k.clamp(max=most) - 1))  # (B, 1): each row's k-th largest
        kth = kth.masked_fill(k >= vocab, float("-inf"))  # rows keeping everything
        return scores.masked_fill(scores < kth, float("-inf"))


@hookimpl
def register_processors(register):
    register(TopK)
