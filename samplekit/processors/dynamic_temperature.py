"""Dynamic (entropy-based) temperature."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor

_GREEDY_BELOW = 1e-6  # a smaller temperature acts as 0: dividing by it could overflow to inf


class DynamicTemperature(Processor):
    """Divide each row by a temperature in [T - range, T + range] that grows with the row's entropy.

    Contract (llama.cpp's ``dynatemp``): with N the number of the row's logits above -inf and H
    the entropy of their softmax, ``t = min_t + (max_t - min_t) * (H / log N) ** exponent`` where
    ``min_t = max(0, T - range)`` and ``max_t = T + range``; the row is divided by t. A row with at
    most one logit above -inf is unchanged; t below 1e-6 keeps only the row's maximum (ties kept),
    as temperature 0 does, instead of overflowing; range = 0 is plain temperature T. Every row
    keeps its order, so the argmax stays; -inf stays -inf.

    >>> DynamicTemperature(temperature=1.0, range=0.5)(None, torch.tensor([[0.0, 0.0]]))
    tensor([[0., 0.]])
    """

    name = "dynamic_temperature"
    aliases = ("dynatemp",)
    primary = "temperature"
    params = (
        Param("temperature", "float", 1.0, "the central temperature T", low=0.0, low_open=True, per_row=True,
              divisor=True),
        Param("range", "float", 0.0, "t varies in [T - range, T + range]; 0 is plain temperature", low=0.0,
              per_row=True),
        Param("exponent", "float", 1.0, "the normalised entropy is raised to this power", low=0.0, per_row=True),
    )
    keeps_argmax = True
    vocab_symmetric = True
    neutral = {"temperature": 1.0, "range": 0.0}

    def process(self, input_ids, scores, ctx):
        return self.by_row_values(ctx, lambda v: _dynamic(scores, v["temperature"], v["range"], v["exponent"]))


def _dynamic(scores: torch.Tensor, temperature: float, range_: float, exponent: float) -> torch.Tensor:
    """The contract above with these values, for every row."""
    if range_ == 0.0:
        return scores if temperature == 1.0 else scores / temperature
    low = max(0.0, temperature - range_)
    high = temperature + range_
    x = scores.float()
    count = (x > float("-inf")).sum(dim=-1, keepdim=True)  # (B, 1) candidates
    log_probs = x.log_softmax(dim=-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).where(probs > 0, 0.0).sum(dim=-1, keepdim=True)  # (B, 1)
    max_entropy = count.clamp(min=2).float().log()
    t = low + (high - low) * (entropy / max_entropy).clamp(0.0, 1.0).pow(exponent)  # (B, 1)
    t = t.where((count > 1) & ~t.isnan(), 1.0)  # one candidate or +inf logits: leave the row be
    greedy = scores.masked_fill(x < x.amax(dim=-1, keepdim=True), float("-inf"))
    scaled = (x / t.clamp(min=_GREEDY_BELOW)).to(scores.dtype)
    return torch.where(t < _GREEDY_BELOW, greedy, scaled)


@hookimpl
def register_processors(register):
    register(DynamicTemperature)
