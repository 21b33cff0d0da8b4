"""Repetition penalties: the multiplicative CTRL form and the additive frequency/presence form.

Each counts the tokens of a window of the row's history: ``scope`` picks which tokens are
candidates (the prompt and the generated tokens, or only the generated ones) and ``last_n``
keeps the last n of those (llama.cpp's ``repeat_last_n``: -1 all of them, 0 none, so the
penalty is off). Padding positions never count and never take a place in the window."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import INT_LIMIT, Param
from samplekit.processor import Processor, StepContext
from samplekit.processors.temperature import divide

SCOPES = ("history", "generated")
WHOLE = -1  # last_n: the whole scope


def _scope_param(default: str) -> Param:
    return Param("scope", "str", default,
                 "which tokens count: history (prompt and generated) or generated (only this generation's)",
                 choices=SCOPES)


def _last_n_param() -> Param:
    return Param("last_n", "int", WHOLE, "count only the last n tokens of the scope (llama.cpp's repeat_last_n); "
                 "-1: all of them, 0: none (the penalty is off)", low=-1, per_row=True)


def _window(last_n: int) -> int:
    """A row's window as a bound on a position's rank from the end (-1: unbounded)."""
    return INT_LIMIT if last_n < 0 else last_n


def token_counts(input_ids: torch.Tensor, vocab_size: int, ctx: StepContext | None,
                 scope: str = "history", last_n: int | torch.Tensor = WHOLE) -> torch.Tensor:
    """How many times each token id occurs in each row: ``[B, V]`` int32.

    Positions where ``ctx.attention_mask`` is False (left padding) do not count, nor ids >= V.
    ``scope="generated"`` counts only each row's last ``ctx.steps[row]`` columns of
    ``input_ids`` (the tokens it chose in this generation; with left padding they are the last
    columns of every row). ``last_n`` (an int, or ``[B, 1]`` int64 per row) then keeps only
    the last n positions that count (-1: all, 0: none), as llama.cpp's ring of the last
    ``penalty_last_n`` tokens: padding takes no place in the window.
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
    if isinstance(last_n, torch.Tensor) or last_n >= 0:
        valid = _in_window(input_ids, valid, last_n)
    keep = input_ids < vocab_size if valid is None else valid & (input_ids < vocab_size)
    ids = input_ids.masked_fill(~keep, vocab_size)  # (B, T'): excluded positions go to column V
    counts = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.int32, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.int32))
    return counts[:, :vocab_size]  # (B, V)


def _in_window(input_ids: torch.Tensor, valid: torch.Tensor | None, last_n: int | torch.Tensor) -> torch.Tensor:
    """``[B, T]``: the positions among the last ``last_n`` valid ones of each row (-1: all)."""
    if not isinstance(last_n, torch.Tensor) and valid is None:  # every position counts: the last n columns
        columns = torch.arange(input_ids.shape[1], device=input_ids.device)
        return (columns >= input_ids.shape[1] - last_n).expand(input_ids.shape)
    if valid is None:
        valid = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    rank = valid.flip(1).to(torch.int64).cumsum(1).flip(1)  # (B, T): valid positions at or after each
    if isinstance(last_n, torch.Tensor):  # (B, 1) per row
        bound = torch.where(last_n < 0, INT_LIMIT, last_n).to(rank.device)
    else:
        bound = _window(last_n)
    return valid & (rank <= bound)


class RepetitionPenalty(Processor):
    """Penalise every token already seen: positive logits divided by the penalty, negative ones multiplied.

    Contract (Hugging Face's ``RepetitionPenaltyLogitsProcessor``, the CTRL form): only the
    logits of token ids present in the row's ``input_ids`` change, each once however often it
    occurs; left-padding positions (``ctx.attention_mask`` False) do not count; penalty > 1
    discourages repetition, < 1 encourages it, 1 is a no-op; -inf stays -inf. Identical to
    Hugging Face on unpadded input (Hugging Face counts padding; samplekit ignores it when the
    mask is given). ``scope: generated`` counts only the tokens of this generation; ``last_n``
    only the last n tokens of the scope (llama.cpp's ``repeat_last_n``; -1 all, 0 off), padding
    taking no place in it. Each row may carry its own penalty and window.

    >>> RepetitionPenalty(penalty=2.0)(torch.tensor([[0, 1]]), torch.tensor([[4.0, -4.0, 4.0]]))
    tensor([[ 2., -8.,  4.]])
    """

    name = "repetition_penalty"
    primary = "penalty"
    params = (
        Param("penalty", "float", 1.1, "the ratio; > 1 discourages repetition, 1 is a no-op", low=0.0,
              low_open=True, per_row=True, divisor=True),
        _scope_param("history"),
        _last_n_param(),
    )
    needs_history = True
    neutral = {"penalty": 1.0}

    def tracks_generation(self) -> bool:
        return self.scope == "generated"

    def process(self, input_ids, scores, ctx):
        penalty = self.row_value(ctx, "penalty", scores)  # a number, or (B, 1) per row
        last_n = self.row_value(ctx, "last_n", scores)  # an int, or (B, 1) per row
        if input_ids is None or (not isinstance(penalty, torch.Tensor) and penalty == 1.0) or \
                (not isinstance(last_n, torch.Tensor) and last_n == 0):
            return scores
        seen = token_counts(input_ids, scores.shape[-1], ctx, self.scope, last_n) > 0  # (B, V)
        divided = scores / penalty if not isinstance(penalty, torch.Tensor) else divide(scores, self, ctx, "penalty")
        penalised = torch.where(scores < 0, (scores * penalty).to(scores.dtype), divided)
        return torch.where(seen, penalised, scores)


class _AdditivePenalty(Processor):
    needs_history = True

    def tracks_generation(self) -> bool:
        return self.scope == "generated"

    neutral = {"penalty": 0.0}

    def amount(self, counts: torch.Tensor, penalty) -> torch.Tensor:
        raise NotImplementedError

    def process(self, input_ids, scores, ctx):
        penalty = self.row_value(ctx, "penalty", scores)  # a number, or (B, 1) per row
        last_n = self.row_value(ctx, "last_n", scores)  # an int, or (B, 1) per row
        if input_ids is None or (not isinstance(penalty, torch.Tensor) and penalty == 0.0) or \
                (not isinstance(last_n, torch.Tensor) and last_n == 0):
            return scores
        counts = token_counts(input_ids, scores.shape[-1], ctx, self.scope, last_n)  # (B, V)
        return scores - self.amount(counts, penalty).to(scores.dtype)


class FrequencyPenalty(_AdditivePenalty):
    """Subtract penalty * count from each token's logit, count its occurrences so far.

    Contract (the OpenAI / vLLM form): ``logit - penalty * count``. By default only this
    generation's tokens count (``scope: generated``, like vLLM and OpenAI; ``history`` also
    counts the prompt; ``generated`` needs a generation's context, so a bare call refuses it).
    Left padding never counts. ``last_n`` counts only the last n tokens of the scope (-1 all,
    0 off). Positive values discourage
    repetition, negative encourage it, 0 is a no-op; unseen tokens and -inf logits are unchanged.
    """

    name = "frequency_penalty"
    primary = "penalty"
    params = (
        Param("penalty", "float", 0.0, "subtracted once per occurrence", low=-2.0, high=2.0, per_row=True),
        _scope_param("generated"),
        _last_n_param(),
    )

    def amount(self, counts, penalty):
        return counts * penalty


class PresencePenalty(_AdditivePenalty):
    """Subtract the penalty once from the logit of every token that already occurred.

    Contract (the OpenAI / vLLM form): ``logit - penalty * (count > 0)``. By default only this
    generation's tokens count (``scope: generated``, like vLLM and OpenAI; ``history`` also
    counts the prompt; ``generated`` needs a generation's context, so a bare call refuses it).
    Left padding never counts. ``last_n`` counts only the last n tokens of the scope (-1 all,
    0 off). Positive values discourage
    repetition, negative encourage it, 0 is a no-op; unseen tokens and -inf logits are unchanged.
    """

    name = "presence_penalty"
    primary = "penalty"
    params = (
        Param("penalty", "float", 0.0, "subtracted once from every token present", low=-2.0, high=2.0,
              per_row=True),
        _scope_param("generated"),
        _last_n_param(),
    )

    def amount(self, counts, penalty):
        return (counts > 0) * penalty


@hookimpl
def register_processors(register):
    register(RepetitionPenalty)
    register(FrequencyPenalty)
    register(PresencePenalty)
