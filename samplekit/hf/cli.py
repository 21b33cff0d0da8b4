"""What the CLI's ``--model FOLDER`` options call (generate, bench), kept out of the CLI modules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from samplekit.errors import ConfigError


@dataclass(frozen=True)
class Sizes:
    """The two numbers ``generate`` reads from a checkpoint's config."""

    vocab_size: int
    context_length: int | None


@dataclass(frozen=True)
class ModelInfo:
    config: Sizes


def load_for_generate(folder: str, device, *, checkpoint: str = "demo", tokenizer: str | None = None,
                      trust_remote_code: bool = False, dtype=None):
    """``(model, tokenizer, info)`` for ``samplekit generate --model FOLDER`` (``dtype``: a torch
    dtype, ``"auto"`` for the saved one, or None for samplekit.hf.load's default)."""
    from samplekit.hf.load import load

    if checkpoint != "demo":
        raise ConfigError(f"--model {folder!r} and --checkpoint {checkpoint!r}: give one of them")
    model, tok = load(folder, device=device, tokenizer=tokenizer, trust_remote_code=trust_remote_code, dtype=dtype)
    return model, tok, ModelInfo(Sizes(model.vocab_size, model.context_length))


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a config.json (a Hugging Face model folder)."""
    return Path(path).expanduser().is_dir() and (Path(path).expanduser() / "config.json").is_file()


def bench_target(model: str | None, checkpoint: str, device, *, trust_remote_code: bool = False, dtype=None):
    """What ``samplekit bench`` measures: ``--model FOLDER`` runs the folder through transformers
    (an HFModel, loaded in ``dtype``: a torch dtype, "auto" or None); any other ``--model`` value,
    or ``--checkpoint``, goes to samplekit's loader."""
    if model is None:
        return checkpoint
    if checkpoint != "demo":
        raise ConfigError(f"--model {model!r} and --checkpoint {checkpoint!r}: give one of them")
    if not is_model_folder(model):
        return model  # "demo" or a .pt file: as --checkpoint
    from samplekit.hf.load import load_model

    return load_model(model, device=device, trust_remote_code=trust_remote_code, dtype=dtype)
