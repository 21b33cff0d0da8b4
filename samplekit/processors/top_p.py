"""Top-p (nucleus) filtering."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import MIN_TOKENS_TO_KEEP, Param
from samplekit.processor import Processor


class TopP(Processor):
    """Keep the smallest set of most probable tokens whose probability reaches p; the rest -> -inf.

    Contract (Hugging Face's ``TopPLogitsWarper``): sort each row ascending, take the cumulative
    softmax and remove the tokens whose cumulative probability is <= 1 - p, always keeping the
    ``min_tokens_to_keep`` most probable. At least one token (the argmax) stays per row; finite
    logits that stay are unchanged; p = 1 returns the scores unchanged; a row of all -inf stays
    all -inf.

    Deliberate differences from Hugging Face: a token tied with the least probable kept token is
    kept too (Hugging Face keeps whichever the sort happened to put last, which differs between
    CPU and GPU sorts), so the result does not depend on token order; and p = 1 is an exact no-op
    (Hugging Face also drops tokens whose probability underflows to 0; its ``generate`` skips
    the warper at 1.0). Without a tie at the cut-off the result is identical.

    >>> TopP(p=0.5)(None, torch.tensor([[2.0, 1.0, 0.0]]))
    tensor([[2., -inf, -inf]])
    """

    name = "top_p"
    aliases = ("nucleus",)
    primary = "p"
    params = (
        Param("p", "float", 0.9, "cumulative probability to keep; 1 keeps everything",
              low=0.0, high=1.0, low_open=True, per_row=True),
        MIN_TOKENS_TO_KEEP,
    )
    neutral = {"p": 1.0}
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True
    candidate_safe = True  # reads only the finite logits' values: runs on top-k candidates

    # filter_candidates: how many of the most probable tokens to try; the smallest vocabulary
    # worth it (below, a failed try costs about what the sort it spares does: 0.25 ms at 4096);
    # how close to the cut a cumulative probability may come before the float32 dense result
    # could differ.
    CANDIDATE_TRIES = (64, 256, 1024)
    MIN_VOCAB = 16384
    MARGIN = 1e-5

    def nucleus_p(self) -> float | None:
        """p when ``process`` is exactly this nucleus filter keeping at least one token
        (``min_tokens_to_keep`` 1; p = 1 a no-op), else None: a promise step strategies trust
        (samplekit.processor; samplekit-native's kernel reads it)."""
        return self.p if self.min_tokens_to_keep == 1 else None

    def filter_candidates(self, input_ids, scores, ctx):
        """``process`` without sorting the vocabulary, when the nucleus is small: the chain's
        candidate path (samplekit.chain). Returns ``(values, indices)`` ``[B, m]``: every token
        ``process`` keeps is among them, with the value ``process`` gives it (-inf if removed),
        and every other token is one ``process`` removes. It tries the top 64, 256 and 1024
        tokens (never more than an eighth of the vocabulary), each only when a bound says it
        can hold the nucleus. Returns None, and the chain runs ``process``, when none does, a
        cumulative probability lies within ``MARGIN`` of ``1 - p``, or the vocabulary is
        smaller than ``MIN_VOCAB``."""
        vocab = scores.shape[-1]
        if vocab < self.MIN_VOCAB:
            return None
        tries = [m for m in self.CANDIDATE_TRIES if m + 1 <= vocab // 8 and m >= self.min_tokens_to_keep]
        ps = self.row_values(ctx, "p")
        if 1.0 in ps or not tries:
            return None
        p = self.row_value(ctx, "p")
        if isinstance(p, torch.Tensor):  # each row's p, and 1 - p, as Python computes them (float64)
            p = torch.tensor(ps, dtype=torch.float64, device=scores.device)[:, None]  # (B, 1)
            cut = 1.0 - p
            cuts = [1.0 - x for x in ps]
        else:
            cut = 1.0 - p
            cuts, ps = [cut] * scores.shape[0], [p] * scores.shape[0]
        row_max = scores.amax(dim=-1, keepdim=True)  # (B, 1)
        total = (scores - row_max).exp_().sum(dim=-1, keepdim=True, dtype=torch.float64)  # NaN: all -inf
        if bool((total * p > tries[-1]).any()):
            return None  # even that many tokens, each as probable as the top one (1 / total), hold < p
        for n, m in enumerate(tries):
            values, indices = scores.topk(m + 1, dim=-1)  # (B, m + 1), largest first
            weights = (values[:, :m] - row_max).double().exp_() / total
            tail = 1.0 - weights.sum(dim=-1, keepdim=True)  # the mass outside the top m
            cumulative = weights.flip(-1).cumsum_(dim=-1).add_(tail)  # least probable first
            nearest = (cumulative - cut).abs_().amin(dim=-1, keepdim=True)
            rows = torch.cat([tail, nearest, weights[:, m - 1:m], values[:, m - 1:m + 1].double()], dim=-1).tolist()
            if any(t != t or near <= self.MARGIN or abs(t - c) <= self.MARGIN for (t, near, *_), c in zip(rows, cuts)):
                return None  # an all -inf row, or a decision too close to call
            if any(t > c or (last == nxt and last != _NEG_INF) for (t, _, _, last, nxt), c in zip(rows, cuts)):
                # the nucleus reaches past the top m, or a tie straddles the m-th place: try more
                # tokens, unless even the next try, each as probable as the m-th, holds < p
                if n + 1 == len(tries) or any(1.0 - t + (tries[n + 1] - m) * q < x
                                              for (t, _, q, _, _), x in zip(rows, ps)):
                    return None
                continue
            removed = (cumulative <= cut).sum(dim=-1, keepdim=True).clamp_(max=m - self.min_tokens_to_keep)
            top = values[:, :m]
            threshold = top.flip(-1).gather(-1, removed)  # the least probable kept logit
            return top.masked_fill(top < threshold, _NEG_INF), indices[:, :m]
        return None

    def process(self, input_ids, scores, ctx):
        cut = self.row_value(ctx, "p", scores, _one_minus)  # 1 - p: a number, or (B, 1) per row
        if not isinstance(cut, torch.Tensor) and cut == 0.0:
            return scores
        sorted_logits = sorted_values(scores)  # (B, V) ascending
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V), non-decreasing
        # The tokens removed are a prefix of the ascending order; count them per row (none where
        # p = 1, as the no-op above: not even tokens whose probability underflows to 0).
        if isinstance(cut, torch.Tensor):  # compared in the scores' dtype, as a number is
            removed = (cumulative <= cut.to(cumulative.dtype)).sum(dim=-1, keepdim=True).masked_fill(cut == 0.0, 0)
        else:
            removed = (cumulative <= cut).sum(dim=-1, keepdim=True)  # (B, 1)
        removed = removed.clamp(max=max(scores.shape[-1] - self.min_tokens_to_keep, 0))
        threshold = sorted_logits.gather(-1, removed)  # (B, 1): the least probable kept logit
        return scores.masked_fill(scores < threshold, float("-inf"))


_NEG_INF = float("-inf")


def sorted_values(scores: torch.Tensor) -> torch.Tensor:
    """Each row's values in ascending order (NaN last): ``scores.sort(dim=-1).values``. On the
    CPU, float32 and float64 rows are sorted by numpy, about 30 times faster than torch's sort,
    which also orders the indices (the values, and so every result, are the same)."""
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64) and not scores.requires_grad:
        import numpy

        return torch.from_numpy(numpy.sort(scores.contiguous().numpy(), axis=-1))
    return scores.sort(dim=-1).values


def _one_minus(p: float) -> float:
    return 1.0 - p


@hookimpl
def register_processors(register):
    register(TopP)
