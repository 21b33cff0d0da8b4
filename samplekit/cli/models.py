"""How a command that runs a model loads it, as ``samplekit generate`` does: ``--checkpoint`` (a .pt
file, a Hugging Face GPT-2 folder or ``demo``) or ``--model FOLDER`` (any Hugging Face causal LM,
through transformers), on ``--device``, in ``--dtype``, with ``--compile``.

    model, enc, info = load_command_model("demo", "cpu", dtype="bfloat16")

``check_dtype`` refuses an unknown ``--dtype`` (a ``PrecisionError``: one ``error:`` line, exit 2)
and is called before anything loads; ``--dtype auto`` loads a ``--model`` folder in its saved dtype.
"""

from __future__ import annotations

from typing import Any


def check_dtype(dtype: str | None) -> None:
    """Refuse an unknown ``--dtype`` name (PrecisionError naming it and the names allowed)."""
    from samplekit.model.precision import parse_dtype

    parse_dtype(dtype)


def load_command_model(checkpoint: str, device: str, *, dtype: str | None = None, compile: bool = False,
                       model_folder: str | None = None, tokenizer: str | None = None,
                       trust_remote_code: bool = False) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, info)``: ``info.config`` has ``vocab_size`` and ``context_length`` (and,
    for a checkpoint, ``info`` is its CheckpointInfo). The dtype is checked before the model loads;
    a ``--model`` folder is loaded by transformers directly in it (its memory check counts its bytes)."""
    from samplekit.cli.options import use_precision
    from samplekit.model.device import resolve_device
    from samplekit.model.precision import load_dtype

    check_dtype(dtype)
    target = resolve_device(device)
    if model_folder is not None:
        from samplekit.hf.cli import load_for_generate

        model, enc, info = load_for_generate(model_folder, target, checkpoint=checkpoint, tokenizer=tokenizer,
                                             trust_remote_code=trust_remote_code, dtype=load_dtype(dtype))
    else:
        from samplekit.model.checkpoint import load_checkpoint
        from samplekit.model.tokenizer import tokenizer_for_checkpoint

        model, info = load_checkpoint(checkpoint, target)
        enc = tokenizer_for_checkpoint(info, tokenizer)
    return use_precision(model, dtype, compile), enc, info
