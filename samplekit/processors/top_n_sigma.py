"""Top-n-sigma filtering."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor


class TopNSigma(Processor):
    """Keep the logits within n standard deviations of the row's maximum; the rest -> -inf.

    Contract (Tang et al. 2024, as llama.cpp's ``top_n_sigma``): a token stays iff
    ``logit >= max - n * std``, where std is the population standard deviation of the row's
    finite logits. The argmax and its ties always stay; kept logits are unchanged; a row of all
    -inf stays all -inf. Unlike top-p it needs no softmax, so it does not depend on temperature
    applied before it (scaling the logits scales max and std alike).

    >>> TopNSigma(n=1.0)(None, torch.tensor([[3.0, 2.0, 0.0, -1.0]]))
    tensor([[3., 2., -inf, -inf]])
    """

    name = "top_n_sigma"
    primary = "n"
    params = (Param("n", "float", 1.0, "how many standard deviations below the maximum to keep", low=0.0,
                    low_open=True, per_row=True),)
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # reads only the finite logits' values: runs on top-k candidates

    def process(self, input_ids, scores, ctx):
        x = scores.float()
        finite = torch.isfinite(x)  # (B, V)
        count = finite.sum(dim=-1, keepdim=True).clamp(min=1)  # (B, 1)
        mean = x.where(finite, 0.0).sum(dim=-1, keepdim=True) / count
        var = (x - mean).square().where(finite, 0.0).sum(dim=-1, keepdim=True) / count
        n = self.row_value(ctx, "n", scores)  # a number, or (B, 1) per row
        threshold = x.amax(dim=-1, keepdim=True) - n * var.sqrt()  # (B, 1)
        return scores.masked_fill(x < threshold, float("-inf"))


@hookimpl
def register_processors(register):
    register(TopNSigma)
