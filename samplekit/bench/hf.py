"""Hugging Face's side of ``bench --compare hf``: ``generate`` with the chain's equivalent
settings (samplekit.bench.hf_settings), its own bare cached loop, and its logits processors
alone against the chain alone. transformers is imported inside the functions."""

from __future__ import annotations

import importlib.util
import inspect
import statistics
from typing import Any

import torch

from samplekit.bench.hf_settings import NEUTRAL, HFSettings
from samplekit.bench.loops import chain_alone
from samplekit.bench.timing import timed
from samplekit.chain import Chain

__all__ = ["HF_CHAIN_ROWS", "HF_CHAIN_VOCAB", "bench_chain_vs_hf", "has_transformers", "hf_bare_loop",
           "hf_generate", "hf_processor_list", "hf_processors_select"]

HF_CHAIN_ROWS, HF_CHAIN_VOCAB = 32, 50257


def has_transformers() -> bool:
    return importlib.util.find_spec("transformers") is not None


@torch.inference_mode()
def hf_bare_loop(hf, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Hugging Face's own floor: the model with its cache, argmax. The cache argument is
    ``cache`` in transformers 5 (``past_key_values``, deprecated there, before)."""
    name = "cache" if "cache" in inspect.signature(type(hf).forward).parameters else "past_key_values"
    out = hf(prompts, use_cache=True, logits_to_keep=1)  # as HF's generate does
    token = out.logits[:, -1].argmax(-1)
    tokens = [token]
    for _ in range(new_tokens - 1):
        out = hf(token[:, None], use_cache=True, **{name: out[name]})
        token = out.logits[:, -1].argmax(-1)
        tokens.append(token)
    return torch.stack(tokens, 1)


def hf_generate(hf, prompts: torch.Tensor, new_tokens: int, settings: HFSettings | None = None):
    """``generate`` on ``prompts`` for exactly ``new_tokens`` tokens (no end-of-text) with
    ``settings`` (default: sampling at temperature 0.8, top-k 50)."""
    from transformers import GenerationConfig

    chosen = settings.kwargs if settings is not None else {"do_sample": True, "temperature": 0.8, "top_k": 50}
    config = GenerationConfig(**{**NEUTRAL, **chosen, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens,
                                 "pad_token_id": 0, "eos_token_id": None, "bos_token_id": None})
    with torch.inference_mode():
        return hf.generate(prompts, attention_mask=torch.ones_like(prompts), generation_config=config)


def hf_processor_list():
    from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    return LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(50), TopPLogitsWarper(0.95)])


@torch.inference_mode()
def hf_processors_select(processors, input_ids, scores, generator=None):
    probs = torch.softmax(processors(input_ids, scores), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def bench_chain_vs_hf(*, rows: int = HF_CHAIN_ROWS, vocab: int = HF_CHAIN_VOCAB, calls: int = 20,
                      repeats: int = 5, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Temperature 0.8, top-k 50, top-p 0.95 and sampling on random logits [rows, vocab]: the
    samplekit chain (one shared generator) against HF's warpers + softmax + torch.multinomial."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.randn(rows, vocab, generator=gen).mul_(3.0).to(dev) for _ in range(4)]
    ids = torch.zeros(rows, 1, dtype=torch.long, device=dev)
    chain = Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 50}), ("top_p", {"p": 0.95}),
                             "multinomial")
    variants = {"samplekit": lambda: chain_alone(chain, scores, ids, calls,
                                                 generator=torch.Generator(dev).manual_seed(seed))}
    if has_transformers():
        processors = hf_processor_list()
        hf_gen = torch.Generator(dev).manual_seed(seed)
        variants["hf"] = lambda: [hf_processors_select(processors, ids, scores[i % 4], hf_gen) for i in range(calls)]
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for key, fn in variants.items():
            times[key].append(timed(fn, dev))
    out: dict[str, Any] = {"rows": rows, "vocab": vocab,
                           "chain": "temperature 0.8, top_k 50, top_p 0.95, multinomial"}
    for key, values in times.items():
        out[f"{key}_ms"] = 1000 * statistics.median(values) / calls
    if "hf_ms" in out:
        out["ratio"] = out["samplekit_ms"] / out["hf_ms"]
    return out
