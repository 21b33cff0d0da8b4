"""``samplekit compare``: chains side by side, on generated text or on a logits record."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from samplekit.cli.options import Compile, Dtype, Threads, use_threads
from samplekit.lab.errors import LabError


def compare(
    chains: Annotated[list[str], typer.Argument(metavar="CHAIN...",
                                                help="Presets or YAML chain files, one row each.")],
    prompts: Annotated[Optional[str], typer.Option(
        "--prompts", help="A prompt file: one prompt per line, or JSON Lines of "
                          "{\"prompt\", \"continuation\"} (then a human row).")] = None,
    corpus: Annotated[Optional[str], typer.Option(
        "--corpus", help="Prompts and human continuations from a corpus (default: demo-heldout).")] = None,
    samples: Annotated[Optional[int], typer.Option(
        "--samples", help="Samples per chain (default 200).")] = None,
    length: Annotated[Optional[int], typer.Option(
        "--length", help="New tokens per sample at most (default 128).")] = None,
    seed: Annotated[int, typer.Option(help="Sample i uses seed + i, the same for every chain.")] = 0,
    checkpoint: Annotated[Optional[str], typer.Option(
        "--checkpoint", "-c", help="A .pt checkpoint, a Hugging Face GPT-2 folder, or 'demo' (the default).")] = None,
    logits: Annotated[Optional[str], typer.Option(
        "--logits", help="Replay the chains on a record from `samplekit record` instead of generating.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", metavar="PNG", help="Also draw the results.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts generated at once.")] = 64,
    bleu_samples: Annotated[Optional[int], typer.Option(
        "--bleu-samples", min=1, help="Score Self-BLEU on this many samples (seeded), each against "
                                      "all others (default: every sample).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "auto",
    threads: Threads = None,
    dtype: Dtype = None,
    compile_: Compile = False,
) -> None:
    """Measure chains on the same prompts and seeds: perplexity, Self-BLEU-4, Zipf, repetition,
    distinct-n, length and speed; or, with --logits, coverage of the human's tokens."""
    from samplekit.lab.chains import named_chains

    from samplekit.cli.models import check_dtype

    named = named_chains(chains)
    check_dtype(dtype)  # an unknown name fails before the model loads
    use_threads(threads)
    if plot:
        from pathlib import Path

        from samplekit.lab.plots import require_matplotlib

        require_matplotlib()
        if not Path(plot).resolve().parent.is_dir():
            raise LabError(f"--plot {plot}: no such folder to write the picture into")
    if logits:
        given = [f for f, v in (("--prompts", prompts), ("--corpus", corpus), ("--samples", samples),
                                ("--length", length), ("--checkpoint", checkpoint), ("--dtype", dtype),
                                ("--compile", compile_ or None)) if v is not None]
        if given:
            raise LabError(f"{', '.join(given)}: not used with --logits (the record holds the text and "
                           "the model's logits)")
        return _replay(named, logits, plot, as_json, seed)
    _generate(named, prompts, corpus, 200 if samples is None else samples, 128 if length is None else length,
              seed, checkpoint or "demo", plot, as_json, batch_size, bleu_samples, device, dtype, compile_)


def _generate(named, prompts, corpus, samples, length, seed, checkpoint, plot, as_json, batch_size,
              bleu_samples, device, dtype=None, compile=False) -> None:
    from samplekit.lab.compare import compare as run_compare
    from samplekit.lab.compare import select_prompts
    from samplekit.lab.corpus import HELDOUT, corpus_prompts, read_prompt_file
    from samplekit.lab.errors import require

    if prompts and corpus:
        raise LabError("--prompts and --corpus: give one source of prompts, not both")
    if length < 1:
        raise LabError(f"--length {length}: expected at least 1")
    prompt_set = read_prompt_file(prompts) if prompts else corpus_prompts(corpus or HELDOUT)
    prompt_set = select_prompts(prompt_set, samples)
    require("nltk.translate.bleu_score", "lab", "Self-BLEU")  # before the model loads
    model, enc = _load(checkpoint, device, dtype, compile)
    typer.echo(f"comparing {', '.join(c.name for c in named)} on {samples} prompts from "
               f"{prompt_set.source} ...", err=True)
    result = run_compare(model, enc, named, prompt_set, samples=samples, length=length, seed=seed,
                         batch_size=batch_size, bleu_hypotheses=bleu_samples,
                         progress=lambda message: typer.echo(f"... {message}", err=True))
    result.settings["checkpoint"] = checkpoint
    if dtype is not None:
        result.settings["dtype"] = dtype
    from samplekit.lab import report

    _show(report.comparison_json(result) if as_json else report.comparison_table(result), as_json)
    if plot:
        from samplekit.lab.plots import plot_comparison

        typer.echo(f"wrote {plot_comparison(result, plot)}", err=True)


def _replay(named, path, plot, as_json, seed) -> None:
    from samplekit.lab import report
    from samplekit.lab.record import load_record
    from samplekit.lab.replay import replay

    record = load_record(path)
    enc = _record_tokenizer(record.meta)
    rows = replay(record, named, seed=seed, tokenizer=enc,
                  eos_token_ids=record.meta.get("eos_token_ids") or ())
    _show(report.replay_json(rows, record.meta) if as_json else report.replay_table(rows, record.meta), as_json)
    if plot:
        from samplekit.lab.plots import plot_tradeoff

        typer.echo(f"wrote {plot_tradeoff(rows, plot)}", err=True)


def _load(checkpoint: str, device: str, dtype: str | None = None, compile: bool = False):
    from samplekit.cli.models import load_command_model

    model, enc, _ = load_command_model(checkpoint, device, dtype=dtype, compile=compile)
    return model, enc


def _record_tokenizer(meta: dict):
    """The record's tokenizer, for processors that resolve strings; None when it cannot load."""
    spec = meta.get("tokenizer")
    if not spec:
        return None
    from samplekit.errors import SampleKitError
    from samplekit.model.tokenizer import load_tokenizer

    try:
        return load_tokenizer(spec, base_dir=meta.get("tokenizer_dir"))
    except (SampleKitError, OSError, ValueError, TypeError, KeyError):  # a record's entry that names none
        return None


def _show(content, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(content, indent=2))
        return
    from rich.console import Console

    Console(width=None if sys.stdout.isatty() else 160).print(content)
