"""Generation for a comparison: one function in front of the engine.

``sample`` is the only place the lab generates. Today it runs ``samplekit.engine.generate`` on
batches of prompts; a continuous-batching scheduler can replace its body without the callers
noticing. Row i is seeded ``seed + i`` (its own generator), so its text does not depend on the
batch it runs in, and every chain sees the same prompts with the same seeds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from samplekit.chain import Chain


@dataclass
class Samples:
    """New tokens per prompt (prompt excluded, end-of-text dropped) and the wall time."""

    tokens: list[list[int]]
    seconds: float


def sample(model, prompts: Sequence[Sequence[int]], chain: Chain, *, length: int, seed: int = 0,
           batch_size: int = 64, tokenizer=None) -> Samples:
    """Generate up to ``length`` tokens from every prompt with ``chain`` (stopping at end-of-text)."""
    from samplekit.engine import generate

    tokens: list[list[int]] = []
    started = time.perf_counter()
    for at in range(0, len(prompts), batch_size):
        batch = [list(p) for p in prompts[at:at + batch_size]]
        seeds = [seed + at + i for i in range(len(batch))]
        results = generate(model, batch, chain=chain, max_new_tokens=length, seed=seeds,
                           tokenizer=tokenizer)
        tokens += [r.tokens for r in results]
    return Samples(tokens, time.perf_counter() - started)
