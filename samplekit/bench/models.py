"""The models and tokenizers the benchmarks run: random-weight shapes, the demo model, checkpoints."""

from __future__ import annotations

from typing import Any

import torch

from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.protocol import prepare  # once per parameter state: the loop then skips it

__all__ = ["SHAPES", "bench_tokenizer", "load_bench_model", "prepare"]

SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12),
    "tiny": dict(vocab_size=4096, context_length=256, emb_dim=256, n_heads=4, n_layers=4),
}


def load_bench_model(spec: str | torch.nn.Module | None, device: str | torch.device = "cpu",
                     seed: int = 0) -> tuple[Any, str]:
    """A model and its name: a model (moved to ``device``), a shape name (random weights),
    "demo" or a checkpoint."""
    if isinstance(spec, torch.nn.Module):
        return spec.to(device).eval(), getattr(spec, "source", None) or type(spec).__name__
    spec = spec or "demo"
    if spec in SHAPES:
        torch.manual_seed(seed)
        cfg = ModelConfig(**SHAPES[spec], drop_rate=0.0, qkv_bias=True)
        return GPTModel(cfg).to(device).eval(), f"{spec} (random weights)"
    from samplekit.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(spec, device)
    return model.eval(), str(spec)


def bench_tokenizer(spec: Any):
    """The tokenizer a benchmark model decodes with: the demo model's for "demo" and the "tiny"
    shape (its vocabulary), GPT-2's tiktoken encoding for "gpt2-small" (TIKTOKEN_CACHE_DIR offline),
    a checkpoint's own, or a model's ``tokenizer`` attribute."""
    from samplekit.model.tokenizer import load_tokenizer, tokenizer_for_checkpoint

    if isinstance(spec, torch.nn.Module):
        tokenizer = getattr(spec, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"{type(spec).__name__} has no tokenizer: this benchmark needs one")
        return tokenizer
    if spec == "gpt2-small":
        return load_tokenizer("gpt2")
    from samplekit.model.checkpoint import load_checkpoint

    _, info = load_checkpoint("demo" if spec in (None, "tiny") else spec, "cpu")
    return tokenizer_for_checkpoint(info)
