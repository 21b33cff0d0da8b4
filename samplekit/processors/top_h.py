"""Top-H: entropy-bounded truncation (Potraghloo et al., NeurIPS 2025, arXiv 2509.02510)."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor


class TopH(Processor):
    """Keep the most probable tokens while their cumulative entropy stays within top_h * H.

    Contract (Hugging Face's ``TopHLogitsWarper``, same parameter names and result): take each
    row's ``top_n`` largest logits, renormalise them (softmax) into ``q`` with entropy ``H``, and
    keep, in decreasing order, the tokens whose cumulative ``-q log q`` is at most ``top_h * H``
    (always the first); every other token -> -inf, kept logits unchanged. The argmax always stays;
    a row of all -inf stays all -inf. A token whose ``q`` underflows to 0 is never kept (as in
    Hugging Face, whose entropy term is then NaN).

    Deliberate differences: a token tied with the least probable kept token is kept too (Hugging
    Face keeps whichever the sort put first), so the result does not depend on token order; and
    half-precision scores are measured in float32. Without a tie at the cut, on float32 scores,
    the result is identical. ``top_h`` defaults to 0.4 (the value of transformers' example;
    its warper has no default) and may differ per row; ``top_n`` is the warper's fixed cap.

    >>> TopH(top_h=0.4)(None, torch.tensor([[3.0, 2.0, 1.0, 0.0]]))
    tensor([[3., -inf, -inf, -inf]])
    """

    name = "top_h"
    primary = "top_h"
    params = (
        Param("top_h", "float", 0.4, "scales the entropy bound tau = top_h * H; larger keeps more tokens",
              low=0.0, high=1.0, low_open=True, per_row=True),
        Param("top_n", "int", 100, "how many of the largest logits the entropy is computed over (Hugging Face: 100)",
              low=1),
    )
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # reads only the top_n finite logits' values: the same on top-k candidates

    def process(self, input_ids, scores, ctx):
        n = min(self.top_n, scores.shape[-1])
        top = scores.topk(n, dim=-1).values  # (B, n) largest first
        work = top.float() if top.element_size() < 4 else top  # half types: in float32
        # What torch.distributions.Categorical(logits=top) computes, step for step (bitwise parity).
        logits = work - work.logsumexp(dim=-1, keepdim=True)
        probs = logits.softmax(dim=-1)  # (B, n)
        clamped = logits.clamp(min=torch.finfo(logits.dtype).min)
        entropy = -(clamped * probs).sum(dim=-1)  # (B,)
        top_h = torch.as_tensor(self.row_value(ctx, "top_h", scores), dtype=torch.float32, device=work.device)
        tau = entropy.unsqueeze(-1) * top_h.to(work.dtype)  # (B, 1); top_h: a scalar or (B, 1)
        cumulative = (-probs * probs.log()).cumsum(dim=-1)  # (B, n) non-decreasing; NaN from a q of 0 on
        selected = (cumulative <= tau).sum(dim=-1, keepdim=True).clamp(min=1)  # (B, 1): a prefix
        least = top.gather(-1, selected - 1)  # (B, 1) the least probable kept logit
        return scores.masked_fill(scores < least, float("-inf"))


@hookimpl
def register_processors(register):
    register(TopH)
