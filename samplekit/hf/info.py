"""``samplekit info --model FOLDER``: what a Hugging Face causal LM folder holds, without
loading its weights (the parameters are counted on the meta device)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from samplekit.hf.load import (WEIGHT_FILES, check_causal_lm, check_remote_code, load_tokenizer, model_folder,
                               needs_remote_code, read_config, read_json,
                               require_transformers)
from samplekit.hf.limits import meta_skeleton
from samplekit.hf.model import context_length_of


def describe(path: str | os.PathLike, *, tokenizer: str | os.PathLike | None = None,
             trust_remote_code: bool = False) -> dict[str, Any]:
    """Architecture, parameter count, vocabulary, context length, dtype, weights and tokenizer."""
    transformers = require_transformers()
    folder = model_folder(path)
    raw = read_config(folder)  # sizes checked before the skeleton is built
    check_remote_code(folder, raw, "AutoModelForCausalLM", trust_remote_code)
    check_causal_lm(folder, raw, needs_remote_code(raw, "AutoModelForCausalLM"))
    config, skeleton = meta_skeleton(transformers, folder, trust_remote_code)  # wrong types: one error
    head = skeleton.get_output_embeddings()
    tok = load_tokenizer(tokenizer if tokenizer is not None else folder, trust_remote_code=trust_remote_code)
    generation = read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    return {
        "path": str(folder),
        "architecture": type(skeleton).__name__,
        "model_type": raw.get("model_type"),
        "num_parameters": sum(p.numel() for p in skeleton.parameters()),
        "dtype": str(raw.get("dtype") or raw.get("torch_dtype") or "float32"),
        "weights": [name for name in WEIGHT_FILES if (folder / name).is_file()],
        "vocab_size": int(head.weight.shape[0]) if head is not None else raw.get("vocab_size"),
        "context_length": context_length_of(config),
        "eos_token_ids": generation.get("eos_token_id", raw.get("eos_token_id")),
        "tokenizer": {"class": type(tok.hf).__name__, "kind": tok.kind, "n_vocab": tok.n_vocab,
                      "special_tokens": sorted(tok.special_tokens_set), "eos_token_id": tok.hf.eos_token_id,
                      "bos_token_id": tok.hf.bos_token_id,
                      "folder": str(Path(tokenizer).expanduser()) if tokenizer is not None else str(folder)},
        "transformers": transformers.__version__,
    }


def lines(data: dict[str, Any]) -> list[str]:
    """``describe``'s dict as the lines ``samplekit info --model`` prints."""
    tok = data["tokenizer"]
    vocab = f"{data['vocab_size']:,} output rows"
    if tok["n_vocab"] < (data["vocab_size"] or 0):
        vocab += f" (the tokenizer decodes {tok['n_vocab']:,}; the rest are never sampled)"
    specials = ", ".join(tok["special_tokens"][:6]) + (", ..." if len(tok["special_tokens"]) > 6 else "")
    return [
        f"model        {data['path']}",
        f"architecture {data['architecture']} (model_type {data['model_type']}), transformers {data['transformers']}",
        f"parameters   {data['num_parameters']:,} ({data['dtype']}; {', '.join(data['weights'])})",
        f"vocabulary   {vocab}",
        f"context      {data['context_length'] or 'not stated'} tokens",
        f"end of text  {data['eos_token_ids']}",
        f"tokenizer    {tok['class']}, {tok['kind'].replace('_', '-')}, {tok['n_vocab']:,} ids, BOS "
        f"{tok['bos_token_id']}, EOS {tok['eos_token_id']}; special: {specials or 'none'}",
    ]
