"""The reference loops the engine is measured against: the bare cached loop (the floor), the
usage guide's plain loop, and the chain alone on random logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from samplekit.chain import Chain

__all__ = ["bare_cached_loop", "chain_alone", "chain_top_k", "naive_loop"]


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


@torch.inference_mode()
def bare_cached_loop(model, prompts: torch.Tensor, new_tokens: int,
                     pick: Callable[[torch.Tensor], torch.Tensor] = _argmax) -> torch.Tensor:
    """The floor: prefill, then one cached forward per token, ``pick`` (argmax), no chain."""
    cache = model.new_cache(prompts.shape[0])
    logits = model(prompts, cache=cache, last_only=True)[:, -1]
    out = [pick(logits)]
    for _ in range(new_tokens - 1):
        logits = model(out[-1][:, None], cache=cache)[:, -1]
        out.append(pick(logits))
    return torch.stack(out, 1)


def chain_top_k(chain: Chain, vocab_size: int) -> int | None:
    """The k of the chain's first top-k (a processor with ``keeps_top``), else None."""
    for p in chain.logits:
        keeps_top = getattr(p, "keeps_top", None)
        if callable(keeps_top) and (k := keeps_top(vocab_size)) is not None:
            return k
    return None


@torch.inference_mode()
def naive_loop(model, prompts: torch.Tensor, new_tokens: int, context_size: int,
               temperature: float = 0.8, top_k: int = 50, generator: torch.Generator | None = None):
    """The usage guide's loop: re-feed the (cropped) context every token; top-k, temperature, sample."""
    idx = prompts
    for _ in range(new_tokens):
        logits = model(idx[:, -context_size:])[:, -1, :]
        top_logits, _ = torch.topk(logits, top_k)
        logits = torch.where(logits < top_logits[:, -1:], torch.tensor(float("-inf")), logits)
        probs = torch.softmax(logits / temperature, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1, generator=generator)), dim=1)
    return idx


@torch.inference_mode()
def chain_alone(chain: Chain, logits: Sequence[torch.Tensor], history: torch.Tensor, steps: int,
                seeds: Sequence[int] | None = None, generator: torch.Generator | None = None) -> None:
    """``steps`` selections of one run of ``chain`` on the given logits, in turn (no model)."""
    run = chain.start(history.shape[0], seeds=seeds, generator=generator)
    for i in range(steps):
        run.select(history, logits[i % len(logits)])
