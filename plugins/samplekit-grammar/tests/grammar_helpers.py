"""What the plugin's tests share: a spy processor and a constrained generation on the demo model."""

from __future__ import annotations

import torch

from samplekit import Processor, generate
from samplekit.chain import Chain
from samplekit.plugins import get_registry


class FiniteSpy(Processor):
    """Records, at every step, the fewest finite logits of any row (after the processors before it)."""

    name = "finite_spy"

    def __init__(self):
        super().__init__()
        self.fewest: list[int] = []

    def process(self, input_ids, scores, ctx):
        self.fewest.append(int(torch.isfinite(scores).sum(dim=-1).min()))  # (B,) -> min
        return scores


def constrained_chain(name: str, params: dict, *after) -> tuple[Chain, FiniteSpy]:
    """``name`` with ``params``, a spy, then ``after`` (default: temperature 1, multinomial)."""
    registry = get_registry()
    spy = FiniteSpy()
    tail = after or (("temperature", {"value": 1.0}), ("multinomial", {}))
    return Chain([registry.create(name, params), spy, *[registry.create(n, p) for n, p in tail]]), spy


def run(demo, name: str, params: dict, prompts: list[str], *, seed=0, max_new_tokens: int = 48, **options):
    """Generate on the demo model through ``name``; (results, spy)."""
    model, enc = demo
    chain, spy = constrained_chain(name, params)
    ids = [enc.encode(p) for p in prompts]
    results = generate(model, ids, chain=chain, max_new_tokens=max_new_tokens, tokenizer=enc,
                       seed=[seed + i for i in range(len(ids))], **options)
    return results, spy
