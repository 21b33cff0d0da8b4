"""XTC, "exclude top choices": sometimes remove the most likely tokens, keeping the least likely
of them, to steer away from the most predictable continuation (as in text-generation-webui and
llama.cpp).

Per row, with probability ``probability`` (one uniform from that row's generator, ``u <
probability``), every token whose probability is at least ``threshold`` is set to -inf except the
least likely of them; nothing happens unless at least two tokens reach the threshold. Every row
draws its uniform at every step, also at probability 0, so a row's random stream is the same
whatever values the rows beside it carry (both values are per row). Unlike
llama.cpp, which keeps exactly one token in sorted order, tokens tied at that least likely
probability are all kept, so the result does not depend on token ids (``vocab_symmetric``).
"""

from __future__ import annotations

import torch

from samplekit import Param, Processor, hookimpl

__version__ = "0.1.0"


class XTC(Processor):
    """Exclude top choices: with some probability, drop every token above a probability threshold but the least likely.

    Contract: only sets logits to -inf (a filter); the least likely token above the threshold
    always stays, so a row keeps at least one finite logit; does not keep the argmax.

    >>> scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    >>> XTC(threshold=0.1, probability=1.0)(None, scores).isinf().tolist()
    [[True, True, False, False]]
    """

    name = "xtc"
    params = (
        Param("threshold", "float", 0.1, "tokens at least this probable are candidates for removal",
              low=0.0, high=0.5, low_open=True, per_row=True),
        Param("probability", "float", 0.5, "chance, per row and step, that the removal happens",
              low=0.0, high=1.0, per_row=True),
    )
    is_filter = True
    vocab_symmetric = True
    random = True

    def process(self, input_ids, scores, ctx):
        probability = self.row_value(ctx, "probability", scores)  # a number, or (B, 1) per row
        apply = ctx.random.uniform(1, scores.device) < probability  # (B, 1): drawn even at probability 0
        if not isinstance(probability, torch.Tensor) and probability == 0.0:
            return scores
        probs = torch.softmax(scores.float(), dim=-1)  # (B, V); ties in logits stay exact ties
        above = probs >= self.row_value(ctx, "threshold", scores)  # (B, V)
        least = probs.masked_fill(~above, float("inf")).amin(dim=-1, keepdim=True)  # (B, 1)
        # Removing only tokens strictly more likely than the least likely candidate means nothing
        # happens with fewer than two candidates (least is then the only one, or +inf).
        remove = above & (probs > least) & apply  # (B, V)
        return scores.masked_fill(remove, float("-inf"))


@hookimpl
def register_processors(register):
    register(XTC)
