"""Truncation by probability: epsilon and eta cutoffs (Hewitt et al. 2022)."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.params import MIN_TOKENS_TO_KEEP, Param
from samplekit.processor import Processor


def _cut_below(scores: torch.Tensor, probs: torch.Tensor, limit: torch.Tensor | float,
               min_tokens_to_keep: int) -> torch.Tensor:
    """Set to -inf the tokens with probability < limit, except the ``min_tokens_to_keep`` largest
    logits and their ties. NaN probabilities (a row of all -inf) compare False: nothing removed."""
    k = min(min_tokens_to_keep, scores.shape[-1])
    kth = scores.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill((probs < limit) & (scores < kth), float("-inf"))


class EpsilonCutoff(Processor):
    """Remove the tokens whose probability is below epsilon (-> -inf), always keeping the most probable.

    Contract (Hugging Face's ``EpsilonLogitsWarper``): a token is removed iff
    ``softmax(scores) < epsilon`` and it is not among the ``min_tokens_to_keep`` largest logits
    (ties with the last of those kept). The argmax always stays; kept logits are unchanged; a
    row of all -inf stays all -inf. Identical to Hugging Face.

    >>> EpsilonCutoff(epsilon=0.1)(None, torch.tensor([[2.0, 1.0, -2.0]]))
    tensor([[2., 1., -inf]])
    """

    name = "epsilon_cutoff"
    aliases = ("epsilon",)
    primary = "epsilon"
    params = (
        Param("epsilon", "float", 3e-4, "remove tokens with probability below this",
              low=0.0, high=1.0, low_open=True, high_open=True, per_row=True),
        MIN_TOKENS_TO_KEEP,
    )
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True

    def process(self, input_ids, scores, ctx):
        probs = scores.softmax(dim=-1)
        epsilon = self.row_value(ctx, "epsilon", scores)  # a number, or (B, 1) per row
        if isinstance(epsilon, torch.Tensor):
            epsilon = epsilon.to(probs.dtype)  # compared in the probabilities' dtype, as a number is
        return _cut_below(scores, probs, epsilon, self.min_tokens_to_keep)


class EtaCutoff(Processor):
    """Remove the tokens whose probability is below min(eta, sqrt(eta) * exp(-entropy)) (-> -inf).

    Contract (Hugging Face's ``EtaLogitsWarper``): the threshold adapts to each row's entropy H,
    ``min(epsilon, sqrt(epsilon) * exp(-H))``; a token below it is removed unless it is among the
    ``min_tokens_to_keep`` largest logits (ties kept). The argmax always stays; kept logits are
    unchanged. A row of all -inf stays all -inf (Hugging Face raises there: its entropy comes from
    ``torch.distributions.Categorical``, which rejects such a row); otherwise identical.
    """

    name = "eta_cutoff"
    aliases = ("eta",)
    primary = "epsilon"
    params = (
        Param("epsilon", "float", 3e-4, "the eta parameter: the largest threshold",
              low=0.0, high=1.0, low_open=True, high_open=True, per_row=True),
        MIN_TOKENS_TO_KEEP,
    )
    keeps_argmax = True
    is_filter = True
    vocab_symmetric = True

    def process(self, input_ids, scores, ctx):
        probs = scores.softmax(dim=-1)  # (B, V)
        # The entropy exactly as torch.distributions.Categorical computes it (for bitwise parity).
        log_probs = scores - scores.logsumexp(dim=-1, keepdim=True)
        p_log_p = log_probs.clamp(min=torch.finfo(log_probs.dtype).min) * log_probs.softmax(dim=-1)
        entropy = -p_log_p.sum(dim=-1, keepdim=True)  # (B, 1); NaN for a row of all -inf
        surprise = torch.exp(-entropy)  # (B, 1)

        def cut(values: dict) -> torch.Tensor:  # each row's own epsilon, computed as for one number
            eps = torch.tensor(values["epsilon"], device=scores.device)  # float32, as Hugging Face
            eta = torch.minimum(eps, eps.sqrt() * surprise)  # (B, 1)
            return _cut_below(scores, probs, eta, self.min_tokens_to_keep)

        return self.by_row_values(ctx, cut)


@hookimpl
def register_processors(register):
    register(EpsilonCutoff)
    register(EtaCutoff)
