"""samplekit's own ``bench --workload`` benchmarks, registered through the ``register_benchmarks``
hook like a plugin's: "ragged" and "open-ended" (samplekit.throughput: the scheduler against
static batches on requests of spread lengths)."""

from __future__ import annotations

from typing import Any

from samplekit.bench.benchmark import Benchmark, BenchSettings
from samplekit.hookspecs import hookimpl

__all__ = ["OPEN_ENDED", "RAGGED", "register_benchmarks"]


def _throughput(open_ended: bool):
    def run(settings: BenchSettings) -> dict[str, Any]:
        from samplekit.throughput import run_workload

        model, name = settings.load_model()
        tokenizer = settings.tokenizer(required=False)
        against = ("transformers' continuous batching, " + f"{settings.repeats} times each" if settings.compare
                   else "static batches")
        settings.progress(f"{settings.requests} {'open-ended ' if open_ended else ''}requests of spread lengths "
                          f"on {name}, {settings.batch_sizes[0]} rows at a time, through the scheduler and "
                          f"{against} (minutes on a 2-core CPU)")
        return {"model": name, **run_workload(model, tokenizer, settings.config, requests=settings.requests,
                                              batch=settings.batch_sizes[0], seed=settings.seed,
                                              open_ended=open_ended, compare=settings.compare,
                                              repeats=settings.repeats, progress=settings.progress)}
    return run


def _show(report: dict[str, Any], console=None) -> None:
    from rich.console import Console

    from samplekit.throughput import print_workload_report

    console = console or Console()
    print_workload_report(report, console)
    for variant in ("hf static", "hf continuous batching"):
        ran = report["variants"].get(variant, {})
        hf = ran.get("hf_settings")
        if hf is None:
            continue
        said = ", ".join(f"{k}={v!r}" for k, v in hf["generate"].items())
        console.print(f"{variant} runs the chain's equivalent: {said}" if hf["exact"] else
                      f"[yellow]note:[/yellow] transformers' generate has no exact equivalent of this chain "
                      f"({'; '.join(hf['notes'])}): {variant} times the nearest settings, {said}")
        if "cache" in ran:
            console.print(f"{variant}: logits processors {', '.join(ran['processors']) or 'none'}; paged cache of "
                          f"{ran['cache']['pages']} pages of {ran['cache']['page_size']} positions, at most "
                          f"{ran['cache']['max_batch_tokens']} tokens per forward")


RAGGED = Benchmark(
    "ragged", "--requests prompts of spread lengths through the scheduler (continuous batching) and through "
    "static batches of --batch-size rows: tokens/s and ratios", _throughput(False), _show,
    batch_sizes=(16,), one_batch_size=True,
    compares={"hf-batch": "instead of static batches, transformers' own continuous batching on the same model and "
                          "requests, --repeats times each: wall, CPU and forward time"})
OPEN_ENDED = Benchmark(
    "open-ended", "the ragged workload with every request ending at end-of-text, at a step not known in advance",
    _throughput(True), _show, batch_sizes=(16,), one_batch_size=True)


@hookimpl
def register_benchmarks(register):
    register(RAGGED)
    register(OPEN_ENDED)
