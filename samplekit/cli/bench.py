"""``samplekit bench``: tokens/s of the engine, its overhead over the bare cached forward loop,
and (``--compare``) the guide's plain loop and Hugging Face's ``generate``. See samplekit.bench."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from samplekit.cli.errors import fail


def bench(
    model: Annotated[str, typer.Option(
        "--model", "--checkpoint", "-c", help="A checkpoint, a Hugging Face GPT-2 folder, or 'demo'.")] = "demo",
    shape: Annotated[Optional[str], typer.Option(
        help="Random weights of this shape instead of --model: gpt2-small or tiny.")] = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="The chain: a YAML config or preset (default: temperature 0.8, top_k 50, multinomial).")] = None,
    batch_sizes: Annotated[Optional[list[int]], typer.Option(
        "--batch-size", "-b", help="Batch size to measure; repeatable (default: 1 and 8).")] = None,
    prompt_tokens: Annotated[int, typer.Option(min=1, help="Prompt length (random token ids).")] = 32,
    new_tokens: Annotated[int, typer.Option("--new-tokens", "-n", min=1, help="Tokens generated per run.")] = 128,
    compare: Annotated[Optional[list[str]], typer.Option(
        help="Also run 'naive' (the guide's plain loop) and/or 'hf' (transformers' generate); repeatable.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Interleaved repeats; medians are reported.")] = 3,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of the random weights, prompts and sampling.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurements as JSON.")] = False,
) -> None:
    """Measure generation speed (a benchmark: numbers vary with the machine and its load)."""
    from samplekit.bench import SHAPES, print_report, run_bench

    if shape is not None and shape not in SHAPES:
        raise fail(f"--shape {shape!r}: use one of {', '.join(SHAPES)}")
    progress = None
    if not as_json:
        def progress(message: str) -> None:
            typer.echo(f"... {message}", err=True)
    try:
        report = run_bench(shape or model, config, batch_sizes=tuple(batch_sizes or (1, 8)),
                           prompt_tokens=prompt_tokens, new_tokens=new_tokens, compare=tuple(compare or ()),
                           repeats=repeats, device=device, seed=seed, progress=progress)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report)
