"""Hugging Face transformers causal LMs through samplekit's engine.

    model, tokenizer = samplekit.hf.load("path/to/folder")      # a local save_pretrained folder
    results = samplekit.generate(model, [tokenizer.encode_prompt("Once upon a time")],
                                 chain="creative", tokenizer=tokenizer, max_new_tokens=50)

A chain inside transformers' own ``generate``: ``samplekit.hf.logits_processor(chain)`` (its
logits stage, generate selects) and ``samplekit.hf.custom_generate(chain)`` (the whole chain as
generate's decoding loop); see samplekit.hf.generate.

transformers is imported only inside the functions that need it (the ``hf`` extra); importing
samplekit.hf costs nothing without it.
"""

from __future__ import annotations

from samplekit.hf.generate import custom_generate, logits_processor
from samplekit.hf.load import MissingDependencyError, load, load_model, load_tokenizer
from samplekit.hf.model import HFCache, HFModel
from samplekit.hf.tokenizer import HFTokenizer

__all__ = ["HFCache", "HFModel", "HFTokenizer", "MissingDependencyError", "custom_generate", "load", "load_model",
           "load_tokenizer", "logits_processor"]
