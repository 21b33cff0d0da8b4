"""Adaptive-p: steer the chosen tokens' probability towards a target (llama.cpp's ``adaptive_p``)."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor

# llama.cpp's transformation constants (src/llama-sampler.cpp): the peak logit, how steeply it
# falls, and 1 / the width of the favoured probability band, all float32 as there.
PEAK_LOGIT_VALUE = 5.0
SHARPNESS = 10.0
INV_WIDTH = float(torch.tensor(1.0, dtype=torch.float32) / torch.tensor(0.3, dtype=torch.float32))


class AdaptiveP(Processor):
    """Replace the logits by a curve peaking at an adapted target probability (adaptive-p).

    Contract (llama.cpp's ``adaptive_p`` sampler, PR #17927, float32 as there): each row keeps an
    exponential moving average of the original probabilities of the tokens it chose, started as
    if ``target`` had always been reached (``sum = target / (1 - decay)``, ``weight = 1 / (1 -
    decay)``). At each step, with ``p = softmax(scores)`` and ``a = clamp(2 * clamp(target, 0, 1)
    - sum / weight, 0, 1)``, every finite logit becomes ``5 - 10 * x^2 / (1 + x)`` where ``x =
    |p - a| / 0.3``; -inf stays -inf. ``accept`` then updates the average with the chosen token's
    original ``p``: ``sum = p + decay * sum``, ``weight = 1 + decay * weight``. A negative target
    turns a row off (scores unchanged, no update), like llama.cpp's default -1.

    llama.cpp samples from the softmax of the new logits as the last sampler of its chain; here
    the selector after it does (``multinomial`` is llama.cpp's behaviour), so put adaptive_p
    last before the selector. Each row has its own average (``start``/``accept``); ``target``
    and ``decay`` may differ per row.
    """

    name = "adaptive_p"
    aliases = ("adaptive",)
    primary = "target"
    params = (
        Param("target", "float", 0.5, "the probability the chosen tokens should average; negative turns it off",
              high=1.0, per_row=True),
        Param("decay", "float", 0.9, "the moving average's decay; it remembers about 1 / (1 - decay) tokens",
              low=0.0, high=0.99, per_row=True),
    )
    neutral = {"target": -1.0}
    stateful = True
    vocab_symmetric = True

    def _rows(self, ctx, name: str) -> torch.Tensor:
        """``[B]`` float32 (CPU): each row's value of ``name``, converted as llama.cpp's floats are."""
        return torch.tensor(self.row_values(ctx, name), dtype=torch.float32)

    def start(self, batch_size, ctx):
        target, decay = self._rows(ctx, "target"), self._rows(ctx, "decay")
        return {"sum": target / (1.0 - decay), "weight": 1.0 / (1.0 - decay), "probs": None}

    def process(self, input_ids, scores, ctx):
        state = ctx.state
        target = self._rows(ctx, "target")
        if not bool((target >= 0).any()):
            state["probs"] = None
            return scores
        target = target.to(scores.device)
        on = target >= 0  # (B,)
        probs = scores.float().softmax(dim=-1)  # (B, V) the original probabilities, kept for accept
        total, weight = state["sum"].to(scores.device), state["weight"].to(scores.device)
        state.update(probs=probs, sum=total, weight=weight)
        adapted = (2.0 * target.clamp(0.0, 1.0) - total / weight).clamp(0.0, 1.0)  # (B,)
        x = ((probs - adapted[:, None]) * INV_WIDTH).abs()
        curve = PEAK_LOGIT_VALUE - SHARPNESS * x * x / (1.0 + x)  # (B, V)
        keep = torch.isneginf(scores) | ~on[:, None]
        return torch.where(keep, scores, curve.to(scores.dtype))

    def accept(self, tokens, ctx):
        state = ctx.state
        probs, state["probs"] = state["probs"], None
        if probs is None:
            return
        device = probs.device
        decay = self._rows(ctx, "decay").to(device)
        on = self._rows(ctx, "target").to(device) >= 0
        chosen = probs.gather(-1, tokens.view(-1, 1).to(device)).view(-1)  # (B,) the chosen tokens' original p
        on &= ~chosen.isnan()  # a row of only -inf has no probability to learn from
        total, weight = state["sum"], state["weight"]
        state["sum"] = torch.where(on, chosen + decay * total, total)
        state["weight"] = torch.where(on, 1.0 + decay * weight, weight)

    def keep_rows(self, state, rows):
        return {"sum": state["sum"][rows.to(state["sum"].device)],
                "weight": state["weight"][rows.to(state["weight"].device)], "probs": None}

    def join_rows(self, state, joining):
        device = state["sum"].device
        return {"sum": torch.cat([state["sum"], joining["sum"].to(device)]),
                "weight": torch.cat([state["weight"], joining["weight"].to(device)]), "probs": None}


@hookimpl
def register_processors(register):
    register(AdaptiveP)
