"""``samplekit bench``: tokens/s of the engine, its overhead over the bare cached forward loop,
and (``--compare``) a plain loop without a cache and Hugging Face's ``generate``. See samplekit.bench."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from samplekit.cli.errors import fail
from samplekit.cli.options import Compile, Dtype, Threads, TrustRemoteCode, use_precision, use_threads
from samplekit.errors import SampleKitError

MAX_BATCH = 1024
MAX_REPEATS = 1000
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
        lines[0] += (f"; roughly {_duration(seconds)} on an idle 2-core CPU ({steps:,} decoding steps; a measured "
                     "estimate follows the warm-ups)")
    else:
        lines[0] += f" ({steps:,} decoding steps, each about {_MS_PER_MILLION} ms per million parameters on a 2-core CPU)"
    from samplekit.bench.trust import busy_note, machine_load

    now = machine_load()
    busy = busy_note(now, now)
    if busy:
        lines.append(f"bench: warning: {busy.replace('was busy', 'is busy')}")
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
        help="Also run 'naive' (a plain loop without a cache) and/or 'hf' (transformers' generate); repeatable. "
             "With --workload ragged: 'hf-batch' (transformers' continuous batching).")] = None,
    repeats: Annotated[int, typer.Option(min=1, max=MAX_REPEATS, help="Interleaved repeats; medians are reported.")] = 3,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N].")] = "cpu",
    threads: Threads = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights, prompts and sampling.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurements as JSON.")] = False,
    workload: Annotated[Optional[str], typer.Option(
        help="Run a workload instead: 'ragged' (--requests prompts of spread lengths through the scheduler and "
             "through static batches of --batch-size rows, default 16), 'open-ended' (the same, each ending at "
             "end-of-text), 'mixed-values' (requests each with their own sampling values against one shared "
             "setting), or one a plugin registers (samplekit-grammar: 'constrained'). An unknown name lists "
             "them.")] = None,
    options: Annotated[Optional[list[str]], typer.Option(
        "--option", metavar="KEY=VALUE", help="A setting of the --workload (e.g. --workload constrained "
        "--option schema=records.json); repeatable.")] = None,
    requests: Annotated[int, typer.Option(min=1, max=100_000, help="With --workload: how many requests.")] = 256,
    dtype: Dtype = None,
    compile_: Compile = False,
) -> None:
    """Measure generation speed (a benchmark: numbers vary with the machine and its load)."""
    from samplekit.bench import SHAPES, print_report, run_bench

    if shape is not None and shape not in SHAPES:
        raise fail(f"--shape {shape!r}: use one of {', '.join(SHAPES)}")
    use_threads(threads)
    sizes = tuple(batch_sizes or (1, 8))
    bad = [b for b in sizes if not 1 <= b <= MAX_BATCH]
    if bad:
        raise fail(f"--batch-size {bad[0]}: use a batch size from 1 to {MAX_BATCH}")
    if workload is not None:
        from samplekit.bench import BenchSettings
        from samplekit.hf.cli import bench_target

        chosen = _benchmark(workload, batch_sizes, options or ())
        for name in compare or ():
            if name not in chosen.compares:
                allowed = ", ".join(f"{k} ({help})" for k, help in chosen.compares.items())
                raise fail(f"--compare {name!r}: --workload {workload} takes {allowed}" if allowed else
                           f"--workload {workload} runs alone, without --compare")
        target = _precise(shape or bench_target(hf_model, model, device, trust_remote_code=trust_remote_code,
                                               dtype=_load_dtype(dtype)),
                          dtype, compile_, device, seed)
        settings = BenchSettings(model=target, config=config, batch_sizes=tuple(batch_sizes or chosen.batch_sizes),
                                 prompt_tokens=prompt_tokens, new_tokens=new_tokens, repeats=repeats,
                                 requests=requests, device=device, seed=seed, options=_pairs(options or ()),
                                 compare=tuple(compare or ()))

        def measure(progress):
            if progress is not None:
                settings.progress = progress
            return chosen.run(settings)

        return _emit(measure, chosen.show, as_json)
    if options:
        raise fail("--option sets a --workload's settings: name the workload")
    from samplekit.hf.cli import bench_target  # transformers only for a --model folder

    target = _precise(shape or bench_target(hf_model, model, device, trust_remote_code=trust_remote_code,
                                               dtype=_load_dtype(dtype)),
                      dtype, compile_, device, seed)
    for line in preview(shape, hf_model or model, sizes, new_tokens, repeats, tuple(compare or ())):
        typer.echo(line, err=True)
    _emit(lambda progress: run_bench(target, config, batch_sizes=sizes, prompt_tokens=prompt_tokens,
                                     new_tokens=new_tokens, compare=tuple(compare or ()), repeats=repeats,
                                     device=device, seed=seed, progress=progress),
          print_report, as_json)


def _emit(measure, print_table, as_json: bool) -> None:
    """Run ``measure(progress)`` (progress lines on stderr unless --json; a ValueError or a
    samplekit error is a usage error) and print its report as JSON or with ``print_table``."""
    progress = None if as_json else (lambda message: typer.echo(f"... {message}", err=True))
    try:
        report = measure(progress)
    except (ValueError, SampleKitError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_table(report)


def _precise(target, dtype: str | None, compile_: bool, device: str, seed: int):
    """``target`` loaded, in ``--dtype`` and compiled with ``--compile``; as it is without them."""
    if dtype is None and not compile_:
        return target
    from samplekit.bench import load_bench_model
    from samplekit.model.precision import parse_dtype

    parse_dtype(dtype)  # an unknown name fails before the model loads
    model, name = load_bench_model(target, device, seed)
    model = use_precision(model, dtype, compile_)
    model.source = f"{name} ({dtype or 'float32'}{', compiled' * compile_})"
    return model


def _load_dtype(dtype: str | None):
    """``--dtype`` as the Hugging Face loader takes it (a ``--model`` folder loads directly in it)."""
    from samplekit.cli.models import check_dtype
    from samplekit.model.precision import load_dtype

    check_dtype(dtype)  # an unknown name fails before the model loads
    return load_dtype(dtype)


def _pairs(options) -> dict[str, str]:
    return dict(o.split("=", 1) for o in options)


def _benchmark(name: str, batch_sizes, options):
    """The registered benchmark ``name`` (built-in or a plugin's), its options and batch sizes
    checked: a usage error names what is allowed."""
    from samplekit.plugins import get_benchmarks

    found = get_benchmarks()
    chosen = found.get(name)
    if chosen is None:
        raise fail(f"--workload {name!r}: use one of {', '.join(repr(n) for n in found)} (plugins may add more)")
    if chosen.one_batch_size and batch_sizes and len(batch_sizes) > 1:
        raise fail(f"--workload {name} takes one --batch-size")
    for option in options:
        key = option.partition("=")[0]
        if "=" not in option or key not in chosen.options:
            allowed = ", ".join(f"{k} ({help})" for k, help in chosen.options.items()) or "no --option"
            raise fail(f"--option {option!r}: --workload {name} takes {allowed}" if "=" in option else
                       f"--option {option!r}: write KEY=VALUE")
    return chosen
