"""transformers' own continuous batching, for ``samplekit bench --workload ragged --compare hf-batch``.

transformers 5 serves many requests with ``model.init_continuous_batching()`` (what
``generate_batch`` uses): a paged key/value cache, prompts prefilled in chunks of at most
``max_batch_tokens`` tokens together with the decoding rows, at most ``max_requests_per_batch``
requests at once. ``hf_continuous_batching`` feeds it the workload's requests, each with its own
``max_new_tokens``, and counts each request's tokens as the scheduler counts them (up to its limit
or end-of-text). Its cache is sized for the workload (transformers sizes it from free GPU memory,
which a CPU does not have); the sizes are in the report.

transformers is imported inside the functions (the ``hf`` extra).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from samplekit.bench.hf_settings import NEUTRAL, hf_settings
from samplekit.chain import Chain
from samplekit.requests import Request

__all__ = ["PAGE_SIZE", "PREFILL_TOKENS", "has_continuous_batching", "hf_continuous_batching"]

PAGE_SIZE = 64  # positions per page of transformers' paged cache
PREFILL_TOKENS = 512  # max_batch_tokens: the most tokens (prompt chunks + decoding rows) in one forward


def has_continuous_batching(hf) -> bool:
    """Whether this transformers model offers continuous batching (transformers 5)."""
    return callable(getattr(hf, "init_continuous_batching", None))


@torch.inference_mode()
def hf_continuous_batching(hf, work: list[Request], batch: int, eos: int | None, chain: Chain,
                           seed: int = 0) -> tuple[int, dict[str, Any]]:
    """Serve ``work`` with transformers' continuous batching, ``batch`` requests at a time, with
    the chain's equivalent settings (samplekit.bench.hf_settings); the useful tokens and what it
    ran (settings, cache sizes, the logits processors it kept)."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    settings = hf_settings(chain)
    longest = max(len(r.prompt) + r.max_new_tokens for r in work)
    pages = batch * (math.ceil(longest / PAGE_SIZE) + 1)
    generation = GenerationConfig(**{**NEUTRAL, **settings.kwargs}, max_new_tokens=max(r.max_new_tokens for r in work),
                                  eos_token_id=eos if eos is not None else -1, pad_token_id=0, bos_token_id=None)
    config = ContinuousBatchingConfig(max_requests_per_batch=batch, num_blocks=pages, page_size=PAGE_SIZE,
                                      max_batch_tokens=PREFILL_TOKENS, seed=seed)
    manager = hf.init_continuous_batching(generation_config=generation, continuous_batching_config=config)
    manager.start()
    try:
        ids = {manager.add_request(r.prompt, max_new_tokens=r.max_new_tokens): r for r in work}
        done: dict[str, Any] = {}
        while len(done) < len(ids):
            result = manager.get_result(timeout=600)
            if result is None:
                raise RuntimeError(f"transformers' continuous batching stopped after {len(done)} of {len(ids)} "
                                   "requests")
            if result.is_finished():
                done[result.request_id] = result
        kept = [type(p).__name__ for p in manager.logit_processor.logits_processor]
    finally:
        manager.stop(block=True)
    tokens = 0
    for request_id, result in done.items():
        row = list(result.generated_tokens)[:ids[request_id].max_new_tokens]
        tokens += row.index(eos) if eos is not None and eos in row else len(row)
    return tokens, {"hf_settings": settings.to_dict(), "processors": kept,
                    "cache": {"page_size": PAGE_SIZE, "pages": pages, "max_batch_tokens": PREFILL_TOKENS}}
