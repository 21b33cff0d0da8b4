"""Temperature scaling."""

from __future__ import annotations

import torch  # noqa: F401 - the docstring example (run by tests/test_docstring_examples.py) uses it

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
    params = (Param("value", "float", 1.0, "the temperature T; 0 means greedy", low=0.0),)
    keeps_argmax = True
    vocab_symmetric = True
    # The chain's candidate fast path (samplekit.chain): a non-decreasing map of each logit that
    # reads only the logit and its row's maximum, so it commutes with top-k and runs on candidates.
    commutes_with_top_k = True
    candidate_safe = True

    def process(self, input_ids, scores, ctx):
        if self.value == 1.0:
            return scores
        if self.value == 0.0:
            row_max = scores.amax(dim=-1, keepdim=True)  # (B, 1)
            return scores.masked_fill(scores < row_max, float("-inf"))
        return scores / self.value


@hookimpl
def register_processors(register):
    register(Temperature)
