"""Selectors: greedy (argmax) and multinomial sampling."""

from __future__ import annotations

from samplekit.hookspecs import hookimpl
from samplekit.processor import Selector
from samplekit.selection import check_rows, inverse_cdf_sample


class Greedy(Selector):
    """Pick each row's largest logit (the lowest token id among ties)."""

    name = "greedy"
    aliases = ("argmax",)
    keeps_argmax = True

    def select(self, input_ids, scores, ctx):
        row_max, tokens = scores.max(dim=-1)  # (B,), (B,)
        check_rows(row_max)
        return tokens

    def select_candidates(self, input_ids, values, indices, ctx):
        """The candidate strategies (samplekit.strategies): ``values``/``indices`` ``[B, n]`` in
        token-id order, so the first maximum is still the lowest token id among ties."""
        return indices.gather(-1, self.select(input_ids, values, ctx).unsqueeze(-1)).squeeze(-1)


class Multinomial(Selector):
    """Sample each row from softmax(logits), drawing only from the run's generator(s).

    Exact inverse-CDF sampling: one uniform per row from that row's generator, so a seed
    reproduces a run and a row's draw does not depend on the rest of its batch. Tokens whose
    logit is -inf are never drawn.
    """

    name = "multinomial"
    aliases = ("sample", "dist")
    keeps_argmax = False
    vocab_symmetric = True
    random = True
    samples_by_inverse_cdf = True  # one uniform per row, inverse_cdf_sample (samplekit.processor)

    def select(self, input_ids, scores, ctx):
        row_max = scores.amax(dim=-1, keepdim=True)  # (B, 1)
        check_rows(row_max)
        return inverse_cdf_sample(scores, ctx.random.uniform(1, scores.device), row_max).squeeze(-1)

    def select_candidates(self, input_ids, values, indices, ctx):
        """The candidate strategies (samplekit.strategies): ``values``/``indices`` ``[B, n]`` in
        token-id order, every row holding a finite maximum (the strategy checks). The CDF then adds
        the same non-zero terms in the same order as over the whole vocabulary, so the same uniform
        draws the same token (up to last-bit rounding, see samplekit.strategies.candidates)."""
        u = ctx.random.uniform(1, values.device)
        return indices.gather(-1, inverse_cdf_sample(values, u, clamp=u.device.type != "cpu")).view(-1)


@hookimpl
def register_processors(register):
    register(Greedy)
    register(Multinomial)
