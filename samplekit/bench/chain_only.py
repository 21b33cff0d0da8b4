"""``samplekit bench --workload chain-only``: what the sampling chain alone costs per row, no model.

For each chain (the balanced chain, temperature 0.8 -> top_k 50 -> multinomial, and llama.cpp's
default, top_k 40 -> top_p 0.95 -> min_p 0.05 -> temperature 0.8 -> multinomial; or ``--config``'s
chain alone), each vocabulary width (``--option vocab=50257,151936``) and each ``--batch-size``
(default 1 and 8): microseconds per row of ``ChainRun.select`` on language-model-like logits
(Zipf-like by rank, samplekit.bench.mixed_values), under each way of computing a step:

- ``in use``: the strategy a run picks (a plugin's, such as samplekit-native's C kernel, else
  samplekit's own); the report names it;
- ``samplekit's own``: samplekit's built-in strategy for the chain (plugins' strategies bypassed);
- ``dense``: every processor on the whole vocabulary (``fast_paths=False``).

The variants alternate within each of ``--repeats`` rounds and the medians count; the load average
before and after is reported (a busy machine makes every figure slower and noisier). A benchmark,
never a test.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from samplekit.bench.benchmark import Benchmark, BenchSettings
from samplekit.bench.mixed_values import lm_like_logits
from samplekit.bench.trust import busy_note, machine_load
from samplekit.chain import Chain
from samplekit.hookspecs import hookimpl
from samplekit.strategy import DENSE, StepStrategy

__all__ = ["CHAINS", "CHAIN_ONLY", "VARIANTS", "measure_chain", "register_benchmarks", "run_chain_only"]

CHAINS: dict[str, tuple] = {
    "balanced": (("temperature", {"value": 0.8}), ("top_k", {"k": 50}), "multinomial"),
    "llama.cpp": (("top_k", {"k": 40}), ("top_p", {"p": 0.95}), ("min_p", {"p": 0.05}),
                          ("temperature", {"value": 0.8}), "multinomial"),
}
VOCABS = (50257, 151936)  # GPT-2's and Qwen's vocabularies
VARIANTS = ("in use", "samplekit's own", "dense")
TARGET_SECONDS = 0.15  # each timed stretch, about
LOGITS = 4  # distinct logits tensors, cycled


def builtin_strategy(chain: Chain) -> StepStrategy:
    """samplekit's own strategy for ``chain`` (its built-in ``step_strategy`` implementations, in
    the hook's order), without any plugin's; dense when none applies."""
    from samplekit.strategies import filter as filter_strategy
    from samplekit.strategies import top_k

    return top_k.step_strategy(chain) or filter_strategy.step_strategy(chain) or DENSE


def _start(chain: Chain, variant: str, rows: int, seed: int):
    if variant == "dense":
        chain = Chain(chain.processors, fast_paths=False)
    run = chain.start(rows, seeds=range(seed, seed + rows))
    if variant == "samplekit's own":
        run.strategy = builtin_strategy(chain)
        run._follow_values()  # noqa: SLF001 - the run's strategy is chosen again for its rows
    return run


def measure_chain(chain: Chain, variant: str, logits: list[torch.Tensor], ids: torch.Tensor,
                  seed: int = 0) -> tuple[float, str]:
    """(microseconds per row of one step, the strategy's name): one run of ``chain`` under
    ``variant``, after a warm-up (the first step runs densely and verifies), over about
    ``TARGET_SECONDS``."""
    rows = ids.shape[0]
    run = _start(chain, variant, rows, seed)
    for step in range(3):
        run.select(ids, logits[step % len(logits)])
    start = time.perf_counter()
    run.select(ids, logits[3 % len(logits)])
    once = max(time.perf_counter() - start, 1e-6)
    steps = int(min(max(TARGET_SECONDS / once, 8), 2000))
    start = time.perf_counter()
    for step in range(steps):
        run.select(ids, logits[step % len(logits)])
    seconds = time.perf_counter() - start
    return seconds / steps / rows * 1e6, run.active_strategy.name


def _vocabs(settings: BenchSettings) -> tuple[int, ...]:
    given = settings.options.get("vocab")
    if given is None:
        return VOCABS
    try:
        vocabs = tuple(int(v) for v in given.split(","))
    except ValueError:
        vocabs = ()
    if not vocabs or any(not 2 <= v <= 1_000_000 for v in vocabs):
        raise ValueError(f"--option vocab={given!r}: give vocabulary widths from 2 to 1000000, comma-separated "
                         "(e.g. vocab=50257,151936)")
    return vocabs


def run_chain_only(settings: BenchSettings) -> dict[str, Any]:
    chains = {"--config": settings.chain()} if settings.config is not None else \
        {name: Chain.from_names(*specs) for name, specs in CHAINS.items()}
    for name, chain in chains.items():
        if chain.selector is None or chain.context:
            raise ValueError(f"{name}: the chain-only benchmark needs a chain of logits processors and a selector")
    vocabs = _vocabs(settings)
    threads = torch.get_num_threads()
    before = machine_load()
    rows_out = []
    for vocab in vocabs:
        for batch in settings.batch_sizes:
            generator = torch.Generator().manual_seed(settings.seed)
            logits = [lm_like_logits(batch, vocab, generator).to(settings.device) for _ in range(LOGITS)]
            ids = torch.randint(0, vocab, (batch, 16), generator=generator).to(settings.device)
            for name, chain in chains.items():
                settings.progress(f"{name}, {vocab} logits, batch {batch}: {' / '.join(VARIANTS)}, "
                                  f"{settings.repeats} rounds")
                found: dict[str, list[float]] = {v: [] for v in VARIANTS}
                names: dict[str, str] = {}
                for repeat in range(settings.repeats):
                    for variant in VARIANTS:
                        cost, names[variant] = measure_chain(chain, variant, logits, ids, settings.seed + repeat)
                        found[variant].append(cost)
                us = {v: round(statistics.median(t), 1) for v, t in found.items()}
                rows_out.append({"chain": name, "vocab": vocab, "batch": batch, "strategy": names["in use"],
                                 "builtin_strategy": names["samplekit's own"], "us_per_row": us,
                                 "own_over_in_use": round(us["samplekit's own"] / us["in use"], 2),
                                 "dense_over_in_use": round(us["dense"] / us["in use"], 2)})
    after = machine_load()
    return {"chains": {n: repr(c) for n, c in chains.items()}, "device": settings.device, "threads": threads,
            "load_before": before, "load_after": after, "note": busy_note(before, after), "rows": rows_out}


def show(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"the chain alone: µs per row of one step ({report['device']}, {report['threads']} "
                        f"thread{'s' * (report['threads'] > 1)}; lower is better)")
    for column in ("chain", "vocab", "batch", "in use", "own", "dense", "own / in use"):
        table.add_column(column, justify="left" if column == "chain" else "right")
    for row in report["rows"]:
        us = row["us_per_row"]
        table.add_row(row["chain"], str(row["vocab"]), str(row["batch"]), f"{us['in use']:.1f}",
                      f"{us[VARIANTS[1]]:.1f}", f"{us['dense']:.1f}", f"{row['own_over_in_use']:.2f}x")
    console.print(table)
    for name in report["chains"]:
        row = next(r for r in report["rows"] if r["chain"] == name)
        console.print(f"{name}: in use {row['strategy']!r}; own: samplekit's {row['builtin_strategy']!r}")
    load = report["load_before"]["load"], report["load_after"]["load"]
    console.print(f"load average {load[0]:.2f} before, {load[1]:.2f} after ({report['load_before']['cores']} cores)")
    if report.get("note"):
        console.print(f"[yellow]note:[/yellow] {report['note']}")


CHAIN_ONLY = Benchmark(
    "chain-only", "the sampling chain alone (no model): µs per row for the strategy in use, samplekit's own "
    "and dense, on 50,257- and 151,936-wide logits", run_chain_only, show,
    options={"vocab": "vocabulary widths, comma-separated (default 50257,151936)"})


@hookimpl
def register_benchmarks(register):
    register(CHAIN_ONLY)
