"""``samplekit bench``: tokens/s of the engine, its overhead over the bare cached forward loop,
and (``--compare``) the guide's plain loop and Hugging Face's ``generate``. See samplekit.bench."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from samplekit.cli.errors import fail
from samplekit.cli.options import TrustRemoteCode

MAX_BATCH = 1024
# Rough cost of one cached decoding step on a 2-core CPU (float32): per million parameters at
# batch 1, growing by a quarter of that per extra row; the variants relative to the engine.
_MS_PER_MILLION = 0.2
_RELATIVE = {"samplekit": 1.0, "bare": 1.0, "topk": 1.0, "chain": 0.05, "naive": 5.0, "hf": 2.0, "hf_bare": 1.5}


def preview(shape, model, batch_sizes, new_tokens, repeats, compare) -> list[str]:
    """What ``bench`` is about to do, roughly how long it takes, and what its units mean."""
    from samplekit.bench import SHAPES

    cfg = SHAPES.get(shape or ("tiny" if model == "demo" else ""))
    variants = ["samplekit", "bare", "topk", "chain"] + [v for v in ("naive",) if v in compare]
    variants += ["hf", "hf_bare"] if "hf" in compare else []
    runs = 1 + repeats  # a warm-up, then the repeats
    steps = runs * new_tokens * len(batch_sizes) * len(variants)
    lines = [f"bench: {len(variants)} variants x {len(batch_sizes)} batch size(s) x {runs} runs "
             f"(1 warm-up + {repeats} repeats) of {new_tokens} steps each"]
    if cfg is not None:
        millions = (12 * cfg["n_layers"] * cfg["emb_dim"] ** 2 + 2 * cfg["vocab_size"] * cfg["emb_dim"]
                    + cfg["context_length"] * cfg["emb_dim"]) / 1e6
        seconds = 5 + sum(runs * new_tokens * _MS_PER_MILLION * millions * (1 + 0.25 * (b - 1)) / 1000
                      * sum(_RELATIVE[v] for v in variants) for b in batch_sizes)
        lines[0] += f"; roughly {_duration(seconds)} on a 2-core CPU ({steps:,} decoding steps; longer on a busy machine)"
    else:
        lines[0] += f" ({steps:,} decoding steps, each about {_MS_PER_MILLION} ms per million parameters on a 2-core CPU)"
    lines.append("bench: units: ms/token is milliseconds per decoding step of the whole batch (at batch 8 a "
                 "step makes 8 tokens, one per row); tokens/s counts every row's tokens; ratios are paired "
                 "medians over the repeats")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    return f"{seconds / 60:.0f} min"


def bench(
    model: Annotated[str, typer.Option(
        "--checkpoint", "-c", help="A checkpoint, a Hugging Face GPT-2 folder (as GPTModel), or 'demo'.")] = "demo",
    hf_model: Annotated[Optional[str], typer.Option(
        "--model", "-m", metavar="FOLDER", help="A Hugging Face causal LM folder, run through transformers "
        "(--compare hf: its generate on the same model); a value that is no such folder acts as --checkpoint.")] = None,
    trust_remote_code: TrustRemoteCode = False,
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
    constrained: Annotated[bool, typer.Option(
        "--constrained", help="Time the chain with a json_schema processor first against the same chain "
        "unconstrained (needs samplekit-grammar).")] = False,
    schema: Annotated[Optional[str], typer.Option(
        help="With --constrained: a JSON schema file (default: an array of 64+ records with free text).")] = None,
    workload: Annotated[Optional[str], typer.Option(
        help="'ragged': serve --requests prompts of spread lengths with the scheduler (continuous batching) "
             "and with static batches of --batch-size rows (default 16); tokens/s and ratios. 'open-ended': "
             "the same prompts, each ending at end-of-text at a step not known in advance.")] = None,
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="With --workload ragged: how many requests.")] = 256,
) -> None:
    """Measure generation speed (a benchmark: numbers vary with the machine and its load)."""
    from samplekit.bench import SHAPES, print_report, run_bench

    if shape is not None and shape not in SHAPES:
        raise fail(f"--shape {shape!r}: use one of {', '.join(SHAPES)}")
    sizes = tuple(batch_sizes or (1, 8))
    bad = [b for b in sizes if not 1 <= b <= MAX_BATCH]
    if bad:
        raise fail(f"--batch-size {bad[0]}: use a batch size from 1 to {MAX_BATCH}")
    if workload is not None:
        if workload not in ("ragged", "open-ended"):
            raise fail(f"--workload {workload!r}: use 'ragged' or 'open-ended'")
        if constrained or compare:
            raise fail(f"--workload {workload} runs alone, without --constrained or --compare")
        if batch_sizes and len(batch_sizes) > 1:
            raise fail(f"--workload {workload} takes one --batch-size (the scheduler's and the static batches' rows)")
        from samplekit.hf.cli import bench_target

        target = shape or bench_target(hf_model, model, device, trust_remote_code=trust_remote_code)
        return _ragged(target, config, requests, batch_sizes[0] if batch_sizes else 16, device, seed, as_json,
                       open_ended=workload == "open-ended")
    if constrained or schema is not None:
        if hf_model is not None or compare:
            raise fail("--constrained runs on --checkpoint or --shape models, without --compare")
        return _constrained(shape or model, config, schema, sizes, prompt_tokens, new_tokens, repeats, device, seed,
                            as_json)
    from samplekit.hf.cli import bench_target  # transformers only for a --model folder

    target = shape or bench_target(hf_model, model, device, trust_remote_code=trust_remote_code)
    for line in preview(shape, hf_model or model, sizes, new_tokens, repeats, tuple(compare or ())):
        typer.echo(line, err=True)
    _emit(lambda progress: run_bench(target, config, batch_sizes=sizes, prompt_tokens=prompt_tokens,
                                     new_tokens=new_tokens, compare=tuple(compare or ()), repeats=repeats,
                                     device=device, seed=seed, progress=progress),
          print_report, as_json)


def _emit(measure, print_table, as_json: bool) -> None:
    """Run ``measure(progress)`` (progress lines on stderr unless --json; a ValueError is a usage
    error) and print its report as JSON or with ``print_table``."""
    progress = None if as_json else (lambda message: typer.echo(f"... {message}", err=True))
    try:
        report = measure(progress)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_table(report)


def _constrained(target, config, schema, sizes, prompt_tokens, new_tokens, repeats, device, seed, as_json) -> None:
    """``bench --constrained``: samplekit.bench.run_constrained_bench, printed."""
    from samplekit.bench import print_constrained_report, run_constrained_bench
    from samplekit.safe_io import load_json_file

    value = load_json_file(schema, what="JSON schema file") if schema is not None else None
    typer.echo(f"bench: constrained vs unconstrained, {len(sizes)} batch size(s) x {1 + repeats} runs of "
               f"{new_tokens} steps each", err=True)
    _emit(lambda progress: run_constrained_bench(target, config, schema=value, batch_sizes=sizes,
                                                 prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeats=repeats,
                                                 device=device, seed=seed, progress=progress),
          print_constrained_report, as_json)


def _ragged(target, config, requests, batch, device, seed, as_json, *, open_ended: bool) -> None:
    """``bench --workload ragged|open-ended``: samplekit.throughput.run_workload, printed."""
    import torch

    from samplekit.bench import bench_tokenizer, load_bench_model
    from samplekit.throughput import print_workload_report, run_workload

    model, name = load_bench_model(target, device, seed)
    tokenizer = getattr(target, "tokenizer", None) if isinstance(target, torch.nn.Module) else bench_tokenizer(target)
    typer.echo(f"bench: {requests} {'open-ended ' if open_ended else ''}requests of spread lengths on {name}, "
               f"{batch} rows at a time, "
               "through the scheduler and static batches (a few minutes on a 2-core CPU at the defaults)", err=True)
    _emit(lambda progress: {"model": name, **run_workload(model, tokenizer, config, requests=requests, batch=batch,
                                                          seed=seed, open_ended=open_ended, progress=progress)},
          print_workload_report, as_json)
