"""Minimum generation length."""

from __future__ import annotations

import torch

from samplekit.errors import ParameterError
from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor


class MinNewTokens(Processor):
    """Forbid the end-of-text token(s) until n tokens have been generated.

    Contract: while ``ctx.step < n`` the logits of the end-of-text ids (``eos_token_ids`` if
    given, else ``ctx.eos_token_ids``) are -inf in every row; from step n on the scores pass
    unchanged; nothing else ever changes. Like Hugging Face's ``MinNewTokensLengthLogitsProcessor``,
    counting steps with ``ctx.step`` instead of ``input_ids`` length minus the prompt length.

    >>> MinNewTokens(n=2, eos_token_ids=[1])(None, torch.zeros(1, 3))
    tensor([[0., -inf, 0.]])
    """

    name = "min_new_tokens"
    aliases = ("min_tokens",)
    params = (
        Param("n", "int", 1, "tokens to generate before end-of-text is allowed", low=0),
        Param("eos_token_ids", "int_list", None, "end-of-text ids; null means the tokenizer's", nullable=True),
    )
    is_filter = True

    def process(self, input_ids, scores, ctx):
        step = ctx.step if ctx is not None else 0
        eos = self.eos_token_ids if self.eos_token_ids is not None else (ctx.eos_token_ids if ctx else ())
        if step >= self.n or not eos:
            return scores
        if max(eos) >= scores.shape[-1]:
            raise ParameterError(f"{self.name}.eos_token_ids: token id {max(eos)} is outside the vocabulary "
                                 f"of {scores.shape[-1]} tokens")
        ids = torch.tensor(sorted(set(eos)), dtype=torch.long, device=scores.device)
        return scores.index_fill(1, ids, float("-inf"))


@hookimpl
def register_processors(register):
    register(MinNewTokens)
