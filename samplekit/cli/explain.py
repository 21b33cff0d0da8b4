"""``samplekit explain``: what each processor of a chain does, step by step (samplekit.lab.explain)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from samplekit.cli.options import Compile, Dtype, Threads, use_threads


def explain(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    config: Annotated[Optional[str], typer.Option(
        "--config", help="A YAML chain config or a preset (default: temperature 0.8, top_k 50, multinomial).")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, max=10_000, help="Tokens to generate and explain.")] = 20,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="Candidates shown per stage.")] = 8,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (same seed, same text).")] = 1,
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A .pt checkpoint, a Hugging Face GPT-2 folder, or 'demo'.")] = "demo",
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="PROC.PARAM=VALUE", help="Override one setting (VALUE is YAML). Repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line per step instead.")] = False,
    plot: Annotated[Optional[str], typer.Option(
        "--plot", metavar="PNG", help="Also draw support and entropy per stage, and the first steps' candidates.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    threads: Threads = None,
    dtype: Dtype = None,
    compile_: Compile = False,
) -> None:
    """Generate with tracing on and show, for each step, what each processor did: the tokens still
    possible, the entropy, the mass removed and the top candidates, the chosen one marked."""
    from samplekit.model.tokenizer import encode_prompt
    from samplekit.overrides import build_config
    from samplekit.engine import generate
    from samplekit.lab.explain import plot_trace, render, steps_json
    from samplekit.cli.models import check_dtype, load_command_model

    check_dtype(dtype)  # an unknown name fails before the model loads
    if plot:
        from samplekit.lab.plots import require_matplotlib

        require_matplotlib()
    cfg = build_config(config, length=steps, seed=seed, sets=set_ or [])
    use_threads(threads)
    model, enc, _ = load_command_model(checkpoint, device, dtype=dtype, compile=compile_)
    (result,) = generate(model, [encode_prompt(enc, prompt)], chain=cfg.build_chain(), max_new_tokens=steps,
                         seed=[cfg.run["seed"]], tokenizer=enc, stop=tuple(cfg.run["stop"]), trace=top)
    if as_json:
        for line in steps_json(result.trace, enc):
            typer.echo(json.dumps(line, ensure_ascii=False, allow_nan=False))
    else:
        from rich.console import Console

        Console(width=None if sys.stdout.isatty() else 160).print(render(result.trace, enc, prompt))
        typer.echo(f"text: {prompt}{result.text or ''}")
    if plot:
        typer.echo(f"wrote {plot_trace(result.trace, enc, plot)}", err=True)
