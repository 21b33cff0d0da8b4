"""Gumbel-max sampling."""

from __future__ import annotations

import torch

from samplekit.hookspecs import hookimpl
from samplekit.processor import Selector
from samplekit.selection import check_rows


class Gumbel(Selector):
    """Sample each row as argmax(logits + Gumbel noise), the noise drawn only from the run's generator(s).

    Contract: the chosen token has the softmax(logits) distribution (the Gumbel-max trick);
    each row draws V uniforms from its own generator (``ctx.random``), so a seed reproduces a
    run and a row's draw does not depend on the rest of its batch. Tokens whose logit is -inf
    are never drawn; a row of all -inf, NaN or +inf raises a row error (samplekit.selection). It draws V numbers per row where
    ``multinomial`` draws one, and gives different (equally distributed) tokens for one seed.
    """

    name = "gumbel"
    aliases = ("gumbel_max",)
    vocab_symmetric = True
    random = True

    def select(self, input_ids, scores, ctx):
        row_max = scores.amax(dim=-1)  # (B,)
        check_rows(row_max)
        u = ctx.random.uniform(scores.shape[-1], scores.device)  # (B, V) in [0, 1)
        u = u.clamp(min=torch.finfo(u.dtype).tiny)  # log(0) would give -inf noise
        noise = -torch.log(-torch.log(u))  # (B, V) standard Gumbel
        return (scores.float() + noise).argmax(dim=-1)


@hookimpl
def register_processors(register):
    register(Gumbel)
