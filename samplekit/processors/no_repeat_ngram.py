"""No-repeat n-gram blocking."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import INT_LIMIT, Param
from samplekit.processor import Processor


class NoRepeatNGram(Processor):
    """Ban every token that would repeat an n-gram already present in the row's history (-> -inf).

    Contract (Hugging Face's ``NoRepeatNGramLogitsProcessor``): with the row's last n-1 tokens as
    prefix, every token that followed that prefix earlier in ``input_ids`` (prompt included) is
    set to -inf; nothing else changes. Size 1 bans every token seen. n-grams touching left padding
    (``ctx.attention_mask`` False) are ignored, and a row with fewer than n real tokens bans
    nothing. Identical to Hugging Face on unpadded input.

    >>> NoRepeatNGram(size=2)(torch.tensor([[5, 6, 5]]), torch.zeros(1, 8))
    tensor([[0., 0., 0., 0., 0., 0., -inf, 0.]])
    """

    name = "no_repeat_ngram"
    aliases = ("no_repeat_ngram_size",)
    params = (Param("size", "int", 3, "the n-gram length that may occur only once", low=1, per_row=True),)
    is_filter = True
    needs_history = True
    neutral = {"size": INT_LIMIT}  # longer than any history: bans nothing

    def process(self, input_ids, scores, ctx):
        return self.by_row_values(ctx, lambda values: self._ban(input_ids, scores, ctx, values["size"]))

    def _ban(self, input_ids, scores, ctx, n: int):
        if input_ids is None or input_ids.shape[1] < n:
            return scores
        vocab_size = scores.shape[-1]
        windows = input_ids.unfold(1, n, 1)  # (B, W, n): every n-gram of the history
        prefix = input_ids[:, input_ids.shape[1] - n + 1:]  # (B, n-1): the last n-1 tokens
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (B, W)
        mask = ctx.attention_mask if ctx is not None else None
        if mask is not None:
            mask = mask[:, -input_ids.shape[1]:].to(device=input_ids.device, dtype=torch.bool)
            real_windows = mask.unfold(1, n, 1).all(dim=-1)  # (B, W)
            real_prefix = mask[:, mask.shape[1] - n + 1:].all(dim=-1, keepdim=True)  # (B, 1)
            matches = matches & real_windows & real_prefix
        banned_ids = windows[..., -1].clamp(max=vocab_size).masked_fill(~matches, vocab_size)  # (B, W)
        banned = torch.zeros(scores.shape[0], vocab_size + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, banned_ids, True)
        return scores.masked_fill(banned[:, :vocab_size], float("-inf"))


@hookimpl
def register_processors(register):
    register(NoRepeatNGram)
