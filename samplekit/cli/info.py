"""``samplekit info``: what a checkpoint says about itself."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

from samplekit.cli.options import TrustRemoteCode

SUMMARISED = ("corpus", "training", "evaluation")


def info(
    checkpoint: Annotated[str, typer.Argument(metavar="demo|PATH",
                                              help="A .pt checkpoint, a Hugging Face GPT-2 folder, or demo.")] = "demo",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    model_folder: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="FOLDER", help="A Hugging Face causal LM folder (read through transformers).")] = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Show a checkpoint's model config, size, epoch, losses, tokenizer and metadata."""
    from samplekit.model.checkpoint import load_checkpoint

    if model_folder is not None:  # transformers, only on this path
        from samplekit.hf.info import describe, lines

        described = describe(model_folder, trust_remote_code=trust_remote_code)
        typer.echo(json.dumps(described, indent=2) if as_json else "\n".join(lines(described)))
        return

    _, meta = load_checkpoint(checkpoint, "cpu")
    data = {
        "path": str(meta.path),
        "config": meta.config.to_dict(),
        "num_parameters": meta.num_parameters,
        "epoch": meta.epoch,
        "train_loss": meta.train_loss,
        "val_loss": meta.val_loss,
        "tokenizer": meta.tokenizer,
        "metadata": {k: _plain(v) for k, v in meta.extra.items()},
    }
    if as_json:
        typer.echo(json.dumps(_plain(data), indent=2, default=str, allow_nan=False))
        return
    lines = [
        f"checkpoint  {data['path']}",
        f"parameters  {meta.num_parameters:,}",
        "config      " + ", ".join(f"{k}={v}" for k, v in data["config"].items()),
        f"epoch       {_fmt(meta.epoch)}",
        f"train loss  {_fmt(meta.train_loss)}",
        f"val loss    {_fmt(meta.val_loss)}",
        f"tokenizer   {_tokenizer(meta.tokenizer)}",
    ]
    for key in SUMMARISED:
        if key in data["metadata"]:
            lines.append(f"{key}:")
            lines += [f"  {line}" for line in summarise(data["metadata"][key])]
    others = [k for k in data["metadata"] if k not in SUMMARISED]
    if others:
        lines.append("other metadata: " + ", ".join(others))
    typer.echo("\n".join(lines))


def summarise(value: Any, prefix: str = "", depth: int = 0, limit: int = 12) -> list[str]:
    """A few readable lines: scalars as ``key: value``, nested mappings with dotted keys (two
    levels), long lists and strings shortened."""
    if not isinstance(value, dict):
        return [f"{prefix.rstrip('.') or 'value'}: {_short(value)}"]
    lines: list[str] = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and depth < 1:
            lines += summarise(item, f"{name}.", depth + 1, limit)
        else:
            lines.append(f"{name}: {_short(item)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more; --json shows all)"]
    return lines


def _short(value: Any, width: int = 80) -> str:
    if isinstance(value, dict):
        text = f"{{{len(value)} keys: {', '.join(map(str, list(value)[:5]))}{', ...' if len(value) > 5 else ''}}}"
    elif isinstance(value, (list, tuple)):
        text = repr(list(value)) if len(value) <= 8 else f"[{len(value)} items: {', '.join(map(repr, value[:3]))}, ...]"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _tokenizer(entry: dict | None) -> str:
    if not entry:
        return "not recorded (generate uses gpt2 unless --tokenizer is given)"
    parts = [str(entry.get("name") or "?")]
    if entry.get("file"):
        parts.append(f"file {entry['file']}")
    if entry.get("eot_token") is not None:
        parts.append(f"end-of-text id {entry['eot_token']}")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    """JSON-ready metadata: small tensors as values, large ones as a shape; NaN and infinities
    as null (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # a tensor (or numpy value): small ones as values, large ones as a shape
        size = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", 1)
        return _plain(value.tolist()) if size <= 16 else f"tensor{list(value.shape)}"
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
