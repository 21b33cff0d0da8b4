"""Quadratic ("smoothing") sampling, as text-generation-webui and koboldcpp define it."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor


class Smoothing(Processor):
    """Reshape each row's logits by a quadratic/cubic curve around its maximum (quadratic sampling).

    Contract (text-generation-webui's ``QuadraticSamplingLogitsWarper``, koboldcpp's smoothing):
    with ``h`` the row's largest logit, ``d = logit - h``, ``k = (3 - curve) / 2`` and
    ``s = (curve - 1) / 2``, every finite logit becomes ``-(k * factor) * d^2 + (s * factor) * d^3
    + h``; -inf stays -inf. ``factor`` 0 returns the scores unchanged (both peers skip it then); a
    larger factor sharpens the distribution. For ``curve`` in [1, 3] the map is non-decreasing, so
    the order and the argmax stay; above 3 (the peers allow up to 10) tokens just below the
    maximum can rise above it. A logit so far below the maximum that the curve overflows float32
    becomes -inf, the curve's limit. Computed per row (webui subtracts the maximum of the whole
    batch, the same at batch size 1), in float32 for half types. Both values may differ per row.

    >>> Smoothing(factor=0.5)(None, torch.tensor([[2.0, 1.0, 0.0]]))
    tensor([[2.0000, 1.5000, 0.0000]])
    """

    name = "smoothing"
    aliases = ("quadratic_sampling",)
    primary = "factor"
    params = (
        Param("factor", "float", 0.0, "smoothing_factor: how strongly logits fall with their distance from the "
              "maximum; 0 turns it off", low=0.0, high=100.0, per_row=True),
        Param("curve", "float", 1.0, "smoothing_curve: 1 is purely quadratic, 3 purely cubic (peers allow up to "
              "10)", low=1.0, high=10.0, per_row=True),
    )
    neutral = {"factor": 0.0}
    vocab_symmetric = True
    candidate_safe = True  # reads only the finite logits and the row's maximum: the same on top-k candidates

    def process(self, input_ids, scores, ctx):
        rows = self.row_processors(ctx) if not self.shares_values(ctx) else [self]
        on = [p.factor != 0.0 for p in rows]
        if not any(on):
            return scores
        x = scores.float() if scores.element_size() < 4 else scores
        # Each row's coefficients k * factor and s * factor, rounded once from Python floats alike
        # for a row alone and among rows with other values.
        quad = torch.tensor([[(3.0 - p.curve) / 2.0 * p.factor] for p in rows], dtype=torch.float32)
        cube = torch.tensor([[(p.curve - 1.0) / 2.0 * p.factor] for p in rows], dtype=torch.float32)
        quad, cube = quad.to(x.device, x.dtype), cube.to(x.device, x.dtype)  # (B, 1) or (1, 1)
        h = x.amax(dim=-1, keepdim=True)  # (B, 1)
        d = x - h  # (B, V), <= 0
        out = -(quad * d**2) + cube * d**3 + h
        out = out.masked_fill(out.isnan(), float("-inf"))  # inf - inf (overflow far below h): the limit -inf
        keep = torch.isneginf(scores)
        if not all(on):  # factor 0 is the identity (the curve itself would flatten the row to h)
            keep = keep | ~torch.tensor(on, device=scores.device).view(-1, 1)
        return torch.where(keep, scores, out.to(scores.dtype))


@hookimpl
def register_processors(register):
    register(Smoothing)
