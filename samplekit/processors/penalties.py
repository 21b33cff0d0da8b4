"""Repetition penalties: the multiplicative CTRL form and the additive frequency/presence form."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import Processor, StepContext

SCOPES = ("history", "generated")


def _scope_param(default: str) -> Param:
    return Param("scope", "str", default,
                 "which tokens count: history (prompt and generated) or generated (only this generation's)",
                 choices=SCOPES)


def token_counts(input_ids: torch.Tensor, vocab_size: int, ctx: StepContext | None,
                 scope: str = "history") -> torch.Tensor:
    """How many times each token id occurs in each row: ``[B, V]`` int32.

    Positions where ``ctx.attention_mask`` is False (left padding) do not count, nor ids >= V.
    ``scope="generated"`` counts only each row's last ``ctx.steps[row]`` columns of
    ``input_ids`` (the tokens it chose in this generation; with left padding they are the last
    columns of every row).
    """
    valid = ctx.attention_mask if ctx is not None else None
    if valid is not None:
        valid = valid[:, -input_ids.shape[1]:].to(device=input_ids.device, dtype=torch.bool)
    if scope == "generated":
        steps = ctx.steps.clamp(max=input_ids.shape[1])  # (B,)
        n = int(steps.max()) if len(steps) else 0
        input_ids = input_ids[:, input_ids.shape[1] - n:]
        valid = valid[:, valid.shape[1] - n:] if valid is not None else None
        if ctx.first_steps is not None and bool((steps != n).any()):  # rows that joined later chose fewer
            mine = torch.arange(n, device=input_ids.device) >= (n - steps.to(input_ids.device))[:, None]
            valid = mine if valid is None else valid & mine
    keep = input_ids < vocab_size if valid is None else valid & (input_ids < vocab_size)
    ids = input_ids.masked_fill(~keep, vocab_size)  # (B, T'): excluded positions go to column V
    counts = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.int32, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.int32))
    return counts[:, :vocab_size]  # (B, V)


class RepetitionPenalty(Processor):
    """Penalise every token already seen: positive logits divided by the penalty, negative ones multiplied.

    Contract (Hugging Face's ``RepetitionPenaltyLogitsProcessor``, the CTRL form): only the
    logits of token ids present in the row's ``input_ids`` change, each once however often it
    occurs; left-padding positions (``ctx.attention_mask`` False) do not count; penalty > 1
    discourages repetition, < 1 encourages it, 1 is a no-op; -inf stays -inf. Identical to
    Hugging Face on unpadded input (Hugging Face counts padding; samplekit ignores it when the
    mask is given). ``scope: generated`` counts only the tokens of this generation.

    >>> RepetitionPenalty(penalty=2.0)(torch.tensor([[0, 1]]), torch.tensor([[4.0, -4.0, 4.0]]))
    tensor([[ 2., -8.,  4.]])
    """

    name = "repetition_penalty"
    params = (
        Param("penalty", "float", 1.1, "the ratio; > 1 discourages repetition, 1 is a no-op", low=0.0,
              low_open=True),
        _scope_param("history"),
    )
    needs_history = True

    def tracks_generation(self) -> bool:
        return self.scope == "generated"

    def process(self, input_ids, scores, ctx):
        if self.penalty == 1.0 or input_ids is None:
            return scores
        seen = token_counts(input_ids, scores.shape[-1], ctx, self.scope) > 0  # (B, V)
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


class _AdditivePenalty(Processor):
    needs_history = True

    def tracks_generation(self) -> bool:
        return self.scope == "generated"

    def amount(self, counts: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def process(self, input_ids, scores, ctx):
        if self.penalty == 0.0 or input_ids is None:
            return scores
        counts = token_counts(input_ids, scores.shape[-1], ctx, self.scope)  # (B, V)
        return scores - self.amount(counts).to(scores.dtype)


class FrequencyPenalty(_AdditivePenalty):
    """Subtract penalty * count from each token's logit, count its occurrences so far.

    Contract (the OpenAI / vLLM form): ``logit - penalty * count``. By default only this
    generation's tokens count (``scope: generated``, like vLLM and OpenAI; ``history`` also
    counts the prompt; ``generated`` needs a generation's context, so a bare call refuses it).
    Left padding never counts. Positive values discourage
    repetition, negative encourage it, 0 is a no-op; unseen tokens and -inf logits are unchanged.
    """

    name = "frequency_penalty"
    params = (
        Param("penalty", "float", 0.0, "subtracted once per occurrence", low=-2.0, high=2.0),
        _scope_param("generated"),
    )

    def amount(self, counts):
        return counts * self.penalty


class PresencePenalty(_AdditivePenalty):
    """Subtract the penalty once from the logit of every token that already occurred.

    Contract (the OpenAI / vLLM form): ``logit - penalty * (count > 0)``. By default only this
    generation's tokens count (``scope: generated``, like vLLM and OpenAI; ``history`` also
    counts the prompt; ``generated`` needs a generation's context, so a bare call refuses it).
    Left padding never counts. Positive values discourage
    repetition, negative encourage it, 0 is a no-op; unseen tokens and -inf logits are unchanged.
    """

    name = "presence_penalty"
    params = (
        Param("penalty", "float", 0.0, "subtracted once from every token present", low=-2.0, high=2.0),
        _scope_param("generated"),
    )

    def amount(self, counts):
        return (counts > 0) * self.penalty


@hookimpl
def register_processors(register):
    register(RepetitionPenalty)
    register(FrequencyPenalty)
    register(PresencePenalty)
