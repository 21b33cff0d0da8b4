"""p-less and p-less-norm: hyperparameter-free truncation (Tan, Wu, Howard, ICLR 2026, arXiv 2509.23234)."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.processor import Processor

_NEG_INF = float("-inf")


class PLess(Processor):
    """Keep the tokens whose probability is at least the row's collision probability sum(p^2).

    Contract (arXiv 2509.23234, the authors' ``p_less_decode``): with ``p = softmax(scores)``, a
    token is removed (-> -inf) iff ``p < sum(p^2)``; kept logits are unchanged. The threshold is
    the chance that two independent draws from the row agree, so a peaked row keeps few tokens
    and a flat row many; no parameter. The row's maximum (and its ties) always stays: sum(p^2) <=
    max(p) in exact arithmetic, and the rounding of a near-uniform row cannot drop it (llama.cpp's
    pull request subtracts 1e-5 for the same reason). Probabilities and the threshold are computed
    in float64 (float32 on MPS). Tokens already at -inf count for nothing, so the cut depends only on the finite
    logits (it runs on top-k candidates unchanged). A row of all -inf stays all -inf.

    >>> PLess()(None, torch.tensor([[0.1, 0.15, 0.2, 0.25, 0.3]]).log())
    tensor([[   -inf,    -inf,    -inf, -1.3863, -1.2040]])
    """

    name = "p_less"
    aliases = ("pless",)
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # sum(p^2) over the finite logits only: the same on top-k candidates

    def _threshold(self, collision: torch.Tensor, vocab_size: int) -> torch.Tensor:
        return collision

    def process(self, input_ids, scores, ctx):
        wide = torch.float32 if scores.device.type == "mps" else torch.float64  # MPS has no float64
        probs = scores.to(wide).softmax(dim=-1)  # (B, V); NaN for a row of all -inf (compares False)
        threshold = self._threshold(probs.square().sum(dim=-1, keepdim=True), scores.shape[-1])  # (B, 1)
        row_max = scores.amax(dim=-1, keepdim=True)
        return scores.masked_fill((probs < threshold) & (scores < row_max), _NEG_INF)


class PLessNorm(PLess):
    """p-less relaxed: keep the tokens whose probability is at least (V * sum(p^2) - 1) / (V - 1).

    Contract (arXiv 2509.23234, the authors' ``p_less_norm_decode``): as ``p_less`` with the
    threshold normalised by the vocabulary size V (the row's length, -inf entries included):
    ``(V * sum(p^2) - 1) / (V - 1)``, which is 0 for a uniform row and never above p-less's, so it
    keeps at least what p-less keeps (more diversity). V = 1 keeps the row. The row's maximum
    always stays; kept logits are unchanged; a row of all -inf stays all -inf.
    """

    name = "p_less_norm"
    aliases = ("pless_norm",)
    candidate_safe = False  # the threshold reads the vocabulary size

    def _threshold(self, collision, vocab_size):
        if vocab_size == 1:
            return torch.zeros_like(collision)
        return (vocab_size * collision - 1.0) / (vocab_size - 1.0)


@hookimpl
def register_processors(register):
    register(PLess)
    register(PLessNorm)
