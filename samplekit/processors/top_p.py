"""Top-p (nucleus) filtering."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import MIN_TOKENS_TO_KEEP, Param
from samplekit.processor import Processor


class TopP(Processor):
    """Keep the smallest set of most probable tokens whose probability reaches p; the rest -> -inf.

    Contract (Hugging Face's ``TopPLogitsWarper``): sort each row ascending, take the cumulative
    softmax and remove the tokens whose cumulative probability is <= 1 - p, always keeping the
    ``min_tokens_to_keep`` most probable. At least one token (the argmax) stays per row; finite
    logits that stay are unchanged; p = 1 returns the scores unchanged; a row of all -inf stays
    all -inf.

    Deliberate differences from Hugging Face: a token tied with the least probable kept token is
    kept too (Hugging Face keeps whichever the sort happened to put last, which differs between
    CPU and GPU sorts), so the result does not depend on token order; and p = 1 is an exact no-op
    (Hugging Face also drops tokens whose probability underflows to 0; its ``generate`` skips
    the warper at 1.0). Without a tie at the cut-off the result is identical.

    >>> TopP(p=0.5)(None, torch.tensor([[2.0, 1.0, 0.0]]))
    tensor([[2., -inf, -inf]])
    """

    name = "top_p"
    aliases = ("nucleus",)
    params = (
        Param("p", "float", 0.9, "cumulative probability to keep; 1 keeps everything",
              low=0.0, high=1.0, low_open=True),
        MIN_TOKENS_TO_KEEP,
    )
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # reads only the finite logits' values: runs on top-k candidates

    def process(self, input_ids, scores, ctx):
        if self.p == 1.0:
            return scores
        sorted_logits = scores.sort(dim=-1).values  # (B, V) ascending
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V), non-decreasing
        # The tokens removed are a prefix of the ascending order; count them per row.
        removed = (cumulative <= 1 - self.p).sum(dim=-1, keepdim=True)  # (B, 1)
        removed = removed.clamp(max=max(scores.shape[-1] - self.min_tokens_to_keep, 0))
        threshold = sorted_logits.gather(-1, removed)  # (B, 1): the least probable kept logit
        return scores.masked_fill(scores < threshold, float("-inf"))


@hookimpl
def register_processors(register):
    register(TopP)
