"""``samplekit export CHECKPOINT --to-hf OUT_DIR``: a samplekit checkpoint as a Hugging Face GPT-2
folder that transformers (and ``samplekit generate --model``) loads. See samplekit.hf.export."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def export(
    checkpoint: Annotated[str, typer.Argument(metavar="demo|PATH", help="A .pt checkpoint, or demo.")] = "demo",
    to_hf: Annotated[str, typer.Option("--to-hf", metavar="OUT_DIR",
                                       help="The folder to write (new or empty).")] = ...,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="A tiktoken encoding name or .tiktoken rank file (default: the checkpoint's).")] = None,
) -> None:
    """Export a checkpoint and its tokenizer as a Hugging Face GPT-2 folder (weights, config, tokenizer)."""
    from samplekit.hf.export import export_checkpoint

    out = export_checkpoint(checkpoint, to_hf, tokenizer=tokenizer)
    typer.echo(f"wrote {out}: load it with samplekit.hf.load({str(out)!r}) or "
               f"`samplekit generate --model {out} PROMPT`")
