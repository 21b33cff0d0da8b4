"""Top-k filtering."""

from __future__ import annotations

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor


class TopK(Processor):
    """Keep the k largest logits of each row and set the rest to -inf (ties at the k-th kept).

    Contract: at least min(k, finite count) finite logits stay per row, at most k plus those tied
    with the k-th value; k >= vocabulary size is a no-op; idempotent.
    """

    name = "top_k"
    params = (Param("k", "int", 50, "how many of the largest logits to keep", low=1),)
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # on candidates: top-k of the finite logits, as on the dense row

    def keeps_top(self, vocab_size: int) -> int | None:
        """How many of the largest logits survive (ties aside), or None when all do: what the
        chain's candidate fast path samples among (samplekit.chain)."""
        return self.k if self.k < vocab_size else None

    def process(self, input_ids, scores, ctx):
        if self.k >= scores.shape[-1]:
            return scores
        kth = scores.topk(self.k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)  # (B, 1)
        return scores.masked_fill(scores < kth, float("-inf"))


@hookimpl
def register_processors(register):
    register(TopK)
