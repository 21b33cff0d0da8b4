"""Temperature scaling."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor


class Temperature(Processor):
    """Divide logits by T; T = 0 keeps only each row's maximum (greedy), never dividing by zero.

    Contract: T > 0 keeps every row's order and argmax; T = 1 returns the scores unchanged;
    T = 0 sets every logit below the row's maximum to -inf (ties at the maximum are all kept).

    >>> Temperature(value=0.5)(None, torch.tensor([[1.0, 2.0]]))
    tensor([[2., 4.]])
    """

    name = "temperature"
    aliases = ("temp",)
    params = (Param("value", "float", 1.0, "the temperature T; 0 means greedy", low=0.0, per_row=True,
                    divisor=True),)
    neutral = {"value": 1.0}
    keeps_argmax = True
    vocab_symmetric = True
    # The chain's candidate fast path (samplekit.chain): a non-decreasing map of each logit that
    # reads only the logit and its row's maximum, so it commutes with top-k and runs on candidates.
    commutes_with_top_k = True
    candidate_safe = True

    def divides_logits_by(self) -> float | None:
        """T when ``process`` is ``scores / T`` (T > 0; T = 1 returns the scores as they are),
        None for T = 0 (greedy masking): a promise step strategies trust (samplekit.processor)."""
        return self.value if self.value > 0 else None

    def process(self, input_ids, scores, ctx):
        value = self.row_value(ctx, "value", scores)
        if not isinstance(value, torch.Tensor):
            if value == 1.0:
                return scores
            if value == 0.0:
                row_max = scores.amax(dim=-1, keepdim=True)  # (B, 1)
                return scores.masked_fill(scores < row_max, float("-inf"))
            return scores / value
        out = divide(scores, self, ctx, "value")  # (B, V); rows at 0 divided by 1
        if 0.0 in self.row_values(ctx, "value"):
            out = out.masked_fill((value == 0) & (scores < scores.amax(dim=-1, keepdim=True)), float("-inf"))
        return out


def divide(scores: torch.Tensor, processor: Processor, ctx, name: str) -> torch.Tensor:
    """``scores`` divided by each row's value of ``name`` (0 counts as 1), rounded exactly as
    ``scores / value`` with a Python number is, so that a row's result is the same alone or
    among rows with other values: on the CPU a float32 division; on CUDA torch multiplies by
    the float32 of the number's double-precision reciprocal; low-precision scores are computed
    in float32 and rounded once."""
    if scores.is_cuda:
        out = scores * processor.row_value(ctx, name, scores, _reciprocal)
    else:
        out = scores / processor.row_value(ctx, name, scores, _nonzero)
    return out.to(scores.dtype)


def _nonzero(value: float) -> float:
    return value if value else 1.0


def _reciprocal(value: float) -> float:
    return 1.0 / value if value else 1.0


@hookimpl
def register_processors(register):
    register(Temperature)
