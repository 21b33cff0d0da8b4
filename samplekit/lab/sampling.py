"""Generation for a comparison: one function in front of the scheduler.

``sample`` is the only place the lab generates: through ``samplekit.scheduler.Scheduler``
(continuous batching, ``batch_size`` rows at once: a sample that ends early at end-of-text hands
its row to the next prompt). Sample i is seeded ``seed + i`` (its own generators; the scheduler is
batch-invariant), so its text does not depend on the batch it runs in, and every chain sees the
same prompts with the same seeds.
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
    from samplekit.requests import Request
    from samplekit.scheduler import Scheduler

    started = time.perf_counter()
    scheduler = Scheduler(model, tokenizer=tokenizer, max_batch=batch_size, chain=chain)
    requests = [Request(prompt=list(p), id=i, seed=seed + i, max_new_tokens=length) for i, p in enumerate(prompts)]
    done = {r.id: r.samples[0].tokens for r in scheduler.run(requests)}
    return Samples([done[i] for i in range(len(prompts))], time.perf_counter() - started)
