"""Random-weight transformers causal LMs of a few architectures, for tests and benchmarks.

    folder = save_random_model("/tmp/llama", "llama", hidden=768, layers=12, heads=12, vocab=32000)
    model, tokenizer = samplekit.hf.load(folder, tokenizer=...)   # or load_model(folder)

Weights are seeded (``seed``); the folder is what ``save_pretrained`` writes (safetensors, or
``pytorch_model.bin`` with ``safe_serialization=False``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

ARCHITECTURES = ("gpt2", "llama", "qwen2", "gpt_neox")
# Named shapes for `samplekit bench`-style measurements.
SHAPES = {
    "gpt2-small": dict(arch="gpt2", vocab=50257, hidden=768, layers=12, heads=12, context=1024),
    "llama-small": dict(arch="llama", vocab=32000, hidden=768, layers=12, heads=12, intermediate=2048,
                        context=2048),
}


def build_config(arch: str, *, vocab: int = 512, hidden: int = 64, layers: int = 2, heads: int = 4,
                 kv_heads: int | None = None, intermediate: int | None = None, context: int = 256,
                 eos: int | None = None, bos: int | None = None):
    """A transformers config of ``arch`` with the given sizes (no dropout)."""
    import transformers as tf

    kv = kv_heads or heads
    inner = intermediate or 4 * hidden
    ids = dict(eos_token_id=eos, bos_token_id=bos, pad_token_id=None)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab, n_positions=context, n_embd=hidden, n_layer=layers, n_head=heads,
                             n_inner=inner, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=inner, max_position_embeddings=context, **ids)
    if arch == "llama":
        return tf.LlamaConfig(num_key_value_heads=kv, **common)
    if arch == "qwen2":
        return tf.Qwen2Config(num_key_value_heads=kv, **common)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(hidden_dropout=0.0, attention_dropout=0.0, **common)
    raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}")


def random_model(arch: str, *, seed: int = 0, **sizes):
    """A transformers causal LM of ``arch`` with seeded random weights, in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(build_config(arch, **sizes)).eval()


def save_random_model(folder: str | os.PathLike, arch: str, *, seed: int = 0, safetensors: bool = True,
                      **sizes) -> Path:
    """Write a random ``arch`` model to ``folder`` with ``save_pretrained``; returns the folder."""
    folder = Path(folder)
    random_model(arch, seed=seed, **sizes).save_pretrained(folder, safe_serialization=safetensors)
    return folder
