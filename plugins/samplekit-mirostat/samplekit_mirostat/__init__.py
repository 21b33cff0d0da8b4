"""Mirostat v1 and v2: selectors that steer each sequence towards a target surprise ``tau``.

Mirostat (Basu et al., 2020, https://arxiv.org/abs/2007.14966) keeps, per sequence, a running
bound ``mu`` on the surprise (-log2 probability) of the tokens it may pick. It starts at
``2 * tau`` when a generation starts, and after each pick moves by the learning rate ``eta`` times
the error between the picked token's surprise and ``tau``: ``mu -= eta * (surprise - tau)``.
As in llama.cpp, each is a selector (the last processor of a chain), and the surprise of the
picked token is measured after truncation and renormalisation.

- ``mirostat`` (v1): estimates the Zipf exponent ``s`` from the ``m`` most likely tokens, derives
  ``k`` from ``s`` and ``mu``, keeps the top ``k`` tokens and samples among them.
- ``mirostat_v2``: keeps the tokens whose surprise is at most ``mu`` (at least the most likely
  token) and samples among them.

The state (``{"mu": [B]}``) belongs to one generation: ``start`` creates it, ``select`` updates it,
``keep_rows`` follows finished rows out of the batch. Tokens tied in probability are kept or
dropped together, so the choice does not depend on token ids. Randomness: one uniform per row
per step from ``ctx.random`` (inverse-CDF sampling, like ``multinomial``).
"""

from __future__ import annotations

import math

import torch

from samplekit import Param, Selector, check_rows, hookimpl, inverse_cdf_sample

__version__ = "0.1.0"

LN2 = math.log(2.0)


class _Mirostat(Selector):
    stateful = True
    random = True
    vocab_symmetric = True

    def tracks_generation(self) -> bool:
        return True  # mu moves with every token chosen

    def start(self, batch_size, ctx):
        mu = self.row_value(ctx, "tau", None, _twice)  # 2 * tau: a number, or (B, 1) per row
        return {"mu": mu.view(-1) if isinstance(mu, torch.Tensor) else torch.full((batch_size,), mu)}

    def _keep(self, log_probs: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def select(self, input_ids, scores, ctx):
        check_rows(scores.amax(dim=-1))  # the chain turns a bad row into a GenerationError
        state = ctx.state
        mu = state["mu"].to(scores.device)  # (B,)
        log_probs = torch.log_softmax(scores.float(), dim=-1)  # (B, V)
        keep = self._keep(log_probs, mu) | (log_probs == log_probs.amax(dim=-1, keepdim=True))  # (B, V)
        truncated = scores.float().masked_fill(~keep, float("-inf"))
        tokens = inverse_cdf_sample(truncated, ctx.random.uniform(1, scores.device)).squeeze(-1)  # (B,)
        picked = torch.log_softmax(truncated, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)  # (B,)
        surprise = -picked / LN2
        tau, eta = self.row_value(ctx, "tau", scores), self.row_value(ctx, "eta", scores)
        tau = tau.view(-1) if isinstance(tau, torch.Tensor) else tau  # (B,) per row
        eta = eta.view(-1) if isinstance(eta, torch.Tensor) else eta
        state["mu"] = mu - eta * (surprise - tau)
        return tokens


_TAU = Param("tau", "float", 5.0, "target surprise in bits (mu starts at 2 * tau)", low=0.0, high=1000.0,
             per_row=True)
_ETA = Param("eta", "float", 0.1, "learning rate of mu", low=0.0, high=1.0, per_row=True)


def _twice(tau: float) -> float:
    return 2.0 * tau


class MirostatV2(_Mirostat):
    """Mirostat v2: sample among the tokens whose surprise is at most mu, then steer mu towards tau."""

    name = "mirostat_v2"
    params = (_TAU, _ETA)

    def _keep(self, log_probs, mu):
        return -log_probs / LN2 <= mu[:, None]


class MirostatV1(_Mirostat):
    """Mirostat v1: estimate the Zipf exponent from the top m tokens, sample from the top k it implies."""

    name = "mirostat"
    aliases = ("mirostat_v1",)
    params = (_TAU, _ETA, Param("m", "int", 100, "how many of the most likely tokens estimate the Zipf exponent",
                                low=2, high=100000))

    def _keep(self, log_probs, mu):
        b, v = log_probs.shape
        finite = (~torch.isneginf(log_probs)).sum(dim=-1)  # (B,) candidates per row
        n = min(self.m, v)
        top = log_probs.topk(n, dim=-1).values.double()  # (B, n) descending
        i = torch.arange(n - 1, dtype=torch.float64)
        t = torch.log((i + 2) / (i + 1))  # (n-1,)
        # log(p_i / p_{i+1}) as a difference of log-probabilities: no underflow for tiny p.
        b_i = (top[:, :-1] - top[:, 1:]).nan_to_num(0.0, posinf=0.0)  # (B, n-1)
        used = i[None, :] < (torch.clamp(finite, max=n) - 1)[:, None]  # pairs of two finite tokens
        s_hat = (t * b_i * used).sum(-1) / (t * t * used).sum(-1).clamp(min=1e-30)  # (B,)
        eps = s_hat - 1
        mu64 = mu.double()
        ln_v = math.log(max(v, 2))
        # k = (eps * 2^mu / (1 - v^-eps)) ** (1 / s_hat), in logs; eps -> 0 gives 2^mu / ln v.
        small = eps.abs() < 1e-6
        safe = torch.where(small, torch.ones_like(eps), eps)
        log_ratio = torch.where(
            small,
            mu64 * LN2 - math.log(ln_v),
            torch.log(safe / -torch.expm1(-safe * ln_v)) + mu64 * LN2,
        )
        k = torch.exp(log_ratio / s_hat).nan_to_num(float("inf"), posinf=float("inf"))
        k = torch.where(s_hat > 0, k, torch.full_like(k, float("inf")))
        k = torch.clamp(torch.floor(k.clamp(max=float(v))), min=1).long()  # (B,)
        kth = log_probs.sort(dim=-1, descending=True).values.gather(-1, (k - 1)[:, None])  # (B, 1)
        return log_probs >= kth


@hookimpl
def register_processors(register):
    register(MirostatV1)
    register(MirostatV2)
