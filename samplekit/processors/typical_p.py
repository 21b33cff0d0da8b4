"""Locally typical filtering."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor


class TypicalP(Processor):
    """Keep the most typical tokens (surprisal nearest the entropy) up to a probability mass; the rest -> -inf.

    Contract (Hugging Face's ``TypicalLogitsWarper``, Meister et al. 2022): order the tokens by
    ``|-log p(token) - H|`` (H the row's entropy), keep them in that order until their
    cumulative probability reaches ``mass``, plus every token tied with the last one kept and at
    least ``min_tokens_to_keep``. At least one token stays per row; kept logits are unchanged;
    mass = 1 is a no-op; a row of all -inf stays all -inf.

    The argmax is NOT always kept: when the most probable token is far less surprising than
    average, typical sampling drops it (that is its purpose). Deliberate differences from
    Hugging Face: mass = 1 is an exact no-op (Hugging Face rejects it; its ``generate`` skips the
    warper at 1.0), and the ``min_tokens_to_keep`` most typical tokens are kept with their ties.
    """

    name = "typical_p"
    aliases = ("typical",)
    primary = "mass"
    params = (
        Param("mass", "float", 0.9, "probability mass of the most typical tokens to keep; 1 keeps everything",
              low=0.0, high=1.0, low_open=True, per_row=True),
        Param("min_tokens_to_keep", "int", 1, "keep at least this many of the most typical tokens", low=1),
    )
    keeps_argmax = False
    is_filter = True
    vocab_symmetric = True
    neutral = {"mass": 1.0}

    def process(self, input_ids, scores, ctx):
        return self.by_row_values(ctx, lambda values: self._typical(scores, values["mass"]))

    def _typical(self, scores, mass: float):
        if mass == 1.0:
            return scores
        log_probs = torch.nn.functional.log_softmax(scores, dim=-1)  # (B, V)
        # -inf logits give 0 * -inf = NaN terms; nansum drops them (they carry no probability).
        entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)  # (B, 1)
        shifted = (-log_probs - entropy).abs()  # (B, V): distance of each surprisal from H
        sorted_shifted, order = shifted.sort(dim=-1)
        cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        last = (cumulative < mass).sum(dim=-1, keepdim=True)  # (B, 1)
        last = torch.maximum(last, torch.full_like(last, self.min_tokens_to_keep - 1))
        last = last.clamp(max=scores.shape[-1] - 1)
        limit = sorted_shifted.gather(-1, last)  # (B, 1)
        # NaN (a row of all -inf) compares False: nothing is removed.
        return scores.masked_fill(shifted > limit, float("-inf"))


@hookimpl
def register_processors(register):
    register(TypicalP)
