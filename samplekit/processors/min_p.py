"""Min-p filtering."""

from __future__ import annotations

import math

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import MIN_TOKENS_TO_KEEP, Param
from samplekit.processor import Processor


class MinP(Processor):
    """Keep the tokens whose probability is at least p times the row's largest; the rest -> -inf.

    Contract: computed in logit space, with no softmax: a token stays iff
    ``logit >= max_logit + log(p)`` (the same condition as ``prob >= p * max_prob``), or it is
    among the ``min_tokens_to_keep`` largest (ties at the last of them kept). The argmax always
    stays; kept logits are unchanged; p = 0 is a no-op; p = 1 keeps only the ties at the maximum;
    a row of all -inf stays all -inf.

    Hugging Face's ``MinPLogitsWarper`` compares softmax probabilities, so the two may differ
    only for a token within rounding error of the threshold; and Hugging Face keeps exactly
    ``min_tokens_to_keep`` tokens where samplekit also keeps ties with the last of them.

    >>> MinP(p=0.2)(None, torch.tensor([[0.0, -1.0, -2.0]]))
    tensor([[ 0., -1., -inf]])
    """

    name = "min_p"
    primary = "p"
    params = (
        Param("p", "float", 0.05, "keep tokens with probability >= p * the largest probability",
              low=0.0, high=1.0, per_row=True),
        MIN_TOKENS_TO_KEEP,
    )
    neutral = {"p": 0.0}
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # reads only the finite logits' values: runs on top-k candidates

    def min_p_ratio(self) -> float | None:
        """p when ``process`` keeps exactly the logits ``>= max_logit + log(p)`` (float32)
        (``min_tokens_to_keep`` 1; p = 0 a no-op), else None: a promise step strategies trust
        (samplekit.processor; samplekit-native's kernel reads it)."""
        return self.p if self.min_tokens_to_keep == 1 else None

    def process(self, input_ids, scores, ctx):
        log_p = self.row_value(ctx, "p", scores, _log)  # log(p): a number, or (B, 1) per row
        if not isinstance(log_p, torch.Tensor) and log_p == _NEG_INF:
            return scores
        # (B, 1), rounded to the scores' dtype as a number's sum is; -inf where p = 0: nothing removed
        threshold = (scores.amax(dim=-1, keepdim=True) + log_p).to(scores.dtype)
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        if k > 1:
            kth = scores.topk(k, dim=-1).values[..., -1:]  # (B, 1)
            threshold = torch.minimum(threshold, kth)
        return scores.masked_fill(scores < threshold, float("-inf"))


_NEG_INF = float("-inf")


def _log(p: float) -> float:
    return math.log(p) if p > 0 else _NEG_INF


@hookimpl
def register_processors(register):
    register(MinP)
