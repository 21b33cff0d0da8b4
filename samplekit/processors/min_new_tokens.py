"""Minimum generation length."""

from __future__ import annotations

import torch

from samplekit.errors import ParameterError
from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor, default_context


class MinNewTokens(Processor):
    """Forbid the end-of-text token(s) until n tokens have been generated.

    Contract: in each row that has chosen fewer than n tokens (``ctx.steps``), the logits of the
    end-of-text ids (``eos_token_ids`` if given, else ``ctx.eos_token_ids``) are -inf; other rows
    pass unchanged; nothing else ever changes. Like Hugging Face's
    ``MinNewTokensLengthLogitsProcessor``, counting each row's own steps instead of ``input_ids``
    length minus the prompt length (so rows that join a running batch count from their start).

    >>> MinNewTokens(n=2, eos_token_ids=[1])(None, torch.zeros(1, 3), default_context(1))
    tensor([[0., -inf, 0.]])
    """

    name = "min_new_tokens"
    aliases = ("min_tokens",)
    primary = "n"
    params = (
        Param("n", "int", 1, "tokens to generate before end-of-text is allowed", low=0, per_row=True),
        Param("eos_token_ids", "int_list", None, "end-of-text ids; null means the tokenizer's", nullable=True),
    )
    is_filter = True
    neutral = {"n": 0}

    def tracks_generation(self) -> bool:
        return True  # counts each row's tokens so far

    def process(self, input_ids, scores, ctx):
        eos = self.eos_token_ids if self.eos_token_ids is not None else ctx.eos_token_ids
        n = self.row_value(ctx, "n")  # a number, or (B, 1) per row (on the CPU, as ctx.steps)
        most = n if not isinstance(n, torch.Tensor) else max(self.row_values(ctx, "n"))
        if ctx.fewest_steps >= most or not eos:
            return scores
        if max(eos) >= scores.shape[-1]:
            raise ParameterError(f"{self.name}.eos_token_ids: token id {max(eos)} is outside the vocabulary "
                                 f"of {scores.shape[-1]} tokens")
        ids = torch.tensor(sorted(set(eos)), dtype=torch.long, device=scores.device)
        early = ctx.steps < (n if not isinstance(n, torch.Tensor) else n.view(-1))  # (B,) rows below their n
        if bool(early.all()):
            return scores.index_fill(1, ids, float("-inf"))
        banned = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device).index_fill_(0, ids, True)
        return scores.masked_fill(early.to(scores.device)[:, None] & banned, float("-inf"))  # (B, V)


@hookimpl
def register_processors(register):
    register(MinNewTokens)
