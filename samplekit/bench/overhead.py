"""``samplekit bench``: how fast the engine is, and what it costs over the model alone.

For each batch size, on the same model and the same random prompts, in one process, the
variants run interleaved (each repeat runs every variant once, in turn; medians are reported).
Ratios are paired: each repeat's time of one variant over the same repeat's time of the other,
so a machine that slows down for a while slows both sides of a ratio; their median is reported:

- ``samplekit``: ``engine.generate`` with the chain (default: temperature 0.8, top-k 50,
  multinomial), per-row seeds; tokens/s end to end;
- ``bare``: the bare cached forward loop: the model with its KV cache and argmax, no chain, no
  engine; its ms per token is the floor the engine's overhead is measured against;
- ``topk`` (the chain holds a top-k): the same loop with argmax replaced by the chain's
  ``topk(k)``: what the one full-vocabulary operation of exact top-k sampling costs by itself,
  the part of the overhead no sampler built on torch.topk can avoid;
- ``chain``: the chain alone (``ChainRun.select`` on random logits of the model's vocabulary);
- ``naive`` (``compare`` has "naive"): the usage guide's plain loop, re-feeding the whole
  context every token (top-k 50, temperature 0.8, softmax, torch.multinomial);
- ``hf`` / ``hf_bare`` (``compare`` has "hf", transformers importable): Hugging Face
  ``generate`` with the chain's equivalent settings (samplekit.bench.hf_settings; when the chain
  has none there, the nearest, named in the report's notes) on a GPT2LMHeadModel holding the
  same weights (for a Hugging Face model, ``samplekit.hf.HFModel``: on that very transformers
  model), and its own bare cached greedy loop.

Besides, the chain alone (temperature 0.8, top-k 50, top-p 0.95, multinomial) against Hugging
Face's LogitsProcessorList (the same warpers) + softmax + torch.multinomial on random logits
``[32, 50257]``. Peak memory is measured on each variant's warm-up run (samplekit.bench.timing).
Timings are float32, with the threads the command chose (``--threads``; samplekit.threads); a
benchmark, never a test. The report says when its figures are not to be trusted
(samplekit.bench.trust: a load average above the cores, repeats that disagree) and then
withholds the ratios that would contradict the table.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from samplekit.bench.hf import bench_chain_vs_hf, has_transformers, hf_bare_loop, hf_generate
from samplekit.bench.hf_settings import hf_settings
from samplekit.bench.loops import bare_cached_loop, chain_alone, chain_top_k, naive_loop
from samplekit.bench.models import load_bench_model, prepare
from samplekit.bench.timing import PeakMemory, paired, timed, version
from samplekit.bench.trust import batch_doubts, busy_note, duration, machine_load, remaining
from samplekit.engine import generate, model_context_length, resolve_chain

__all__ = ["LABELS", "print_report", "run_bench"]


def run_bench(model: str | torch.nn.Module | None = None, config: Any = None, *, batch_sizes: Sequence[int] = (1, 8),
              prompt_tokens: int = 32, new_tokens: int = 128, compare: Sequence[str] = (),
              repeats: int = 3, device: str = "cpu", seed: int = 0, chain_vs_hf: bool | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure; return a JSON-able dict (see ``print_report``).

    ``model``: a GPTModel, a shape (``"gpt2-small"``, ``"tiny"``: random weights), ``"demo"`` or a
    checkpoint path. ``config``: the chain (anything ``engine.generate`` takes; default
    temperature 0.8, top-k 50, multinomial). ``compare``: any of "naive", "hf". ``chain_vs_hf``:
    also time the chain alone against HF's LogitsProcessorList (default: when "hf" is compared).
    """
    compare = tuple(compare)
    unknown = [c for c in compare if c not in ("naive", "hf")]
    if unknown:
        raise ValueError(f"unknown comparison {unknown[0]!r}: use naive and/or hf")
    if repeats < 1 or new_tokens < 1 or prompt_tokens < 1 or not batch_sizes:
        raise ValueError("repeats, new_tokens, prompt_tokens must be >= 1 and batch_sizes non-empty")
    say = progress or (lambda message: None)
    load_before = machine_load()
    dev = torch.device(device)
    net, name = load_bench_model(model, dev, seed)
    chain = resolve_chain(config)
    ctx = model_context_length(net) or prompt_tokens + new_tokens
    if prompt_tokens + new_tokens > ctx:
        raise ValueError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the model's "
                         f"context_length {ctx}: the bare cached loop could not run")
    has_hf = has_transformers()
    hf = settings = None
    if "hf" in compare and has_hf:
        from samplekit.hf.export import to_hf_gpt2
        from samplekit.hf.model import HFModel

        say("converting the weights to GPT2LMHeadModel" if not isinstance(net, HFModel) else
            "Hugging Face generate runs on the same transformers model")
        hf = net.model if isinstance(net, HFModel) else to_hf_gpt2(net)
        settings = hf_settings(chain)
    prepare(net)  # fuse q/k/v once, outside every timing
    vocab = net.config.vocab_size
    top_k = chain_top_k(chain, vocab)
    report: dict[str, Any] = {
        "model": name, "config": net.summary() if callable(getattr(net, "summary", None)) else
        {k: v for k, v in net.config.to_dict().items() if k != "drop_rate"},
        "parameters": net.num_parameters(), "chain": [str(p) for p in chain.processors],
        "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": version("transformers") if has_hf else None, "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeats": repeats,
        "compare": list(compare), "strategy": chain.start(1).strategy.name, "batches": [],
    }
    if "hf" in compare and not has_hf:
        report["notes"] = ["--compare hf skipped: transformers is not installed (pip install 'samplekit-lm[bench]')"]
    if settings is not None:
        report["hf_settings"] = settings.to_dict()
        if not settings.exact:
            report.setdefault("notes", []).append(
                "transformers' generate has no exact equivalent of this chain ("
                + "; ".join(settings.notes) + f"): HF generate times the nearest settings, {settings.describe()}")
    gen = torch.Generator().manual_seed(seed)
    for index, B in enumerate(batch_sizes):
        prompts = torch.randint(0, vocab, (B, prompt_tokens), generator=gen).to(dev)
        logits = [torch.randn(B, vocab, generator=gen).mul_(3.0).to(dev) for _ in range(8)]
        seeds = [seed + i for i in range(B)]
        variants: dict[str, Callable[[], Any]] = {
            "samplekit": lambda: generate(net, prompts, chain=chain, max_new_tokens=new_tokens, seed=seeds,
                                          stop_on_eos=False),
            "bare": lambda: bare_cached_loop(net, prompts, new_tokens),
            "chain": lambda: chain_alone(chain, logits, prompts, new_tokens, seeds=seeds),
        }
        if top_k is not None:
            variants["topk"] = lambda: bare_cached_loop(net, prompts, new_tokens,
                                                        lambda scores: scores.topk(top_k, dim=-1).indices[:, 0])
        if "naive" in compare:
            variants["naive"] = lambda: naive_loop(net, prompts, new_tokens, ctx,
                                                   generator=torch.Generator(dev).manual_seed(seed))
        if hf is not None:
            variants["hf"] = lambda: hf_generate(hf, prompts, new_tokens, settings)
            variants["hf_bare"] = lambda: hf_bare_loop(hf, prompts, new_tokens)
        times: dict[str, list[float]] = {k: [] for k in variants}
        memory: dict[str, float | None] = {}
        warmups: dict[str, float] = {}
        for key, fn in variants.items():  # warm-up run, measuring peak memory
            say(f"batch {B}: warm-up {key}")
            with PeakMemory(dev) as peak:
                warmups[key] = timed(fn, dev)
            memory[key] = peak.mib
        say(f"batch {B}: about {duration(remaining(warmups, repeats, batch_sizes, index))} left "
            "(measured on the warm-ups)")
        for r in range(repeats):
            say(f"batch {B}: repeat {r + 1}/{repeats}")
            for key, fn in variants.items():
                times[key].append(timed(fn, dev))
        row: dict[str, Any] = {"batch_size": B}
        for key, values in times.items():
            t = statistics.median(values)
            row[key] = {"seconds": t, "ms_per_token": 1000 * t / new_tokens,
                        "tokens_per_s": B * new_tokens / t, "peak_mem_mib": memory[key],
                        "best_seconds": min(values), "all_seconds": values}
        ratios = {"overhead_vs_bare": paired(times["samplekit"], times["bare"]) - 1,
                  # best-of-repeats: what each costs when the machine does not interfere
                  "overhead_vs_bare_best": row["samplekit"]["best_seconds"] / row["bare"]["best_seconds"] - 1}
        if "topk" in times:
            ratios["topk_overhead_vs_bare"] = paired(times["topk"], times["bare"]) - 1
        ratios["chain_share"] = row["chain"]["seconds"] / row["samplekit"]["seconds"]
        if "naive" in times:
            ratios["speedup_vs_naive"] = paired(times["naive"], times["samplekit"])
        if "hf" in times:
            ratios["speedup_vs_hf"] = paired(times["hf"], times["samplekit"])
            ratios["hf_overhead_vs_hf_bare"] = paired(times["hf"], times["hf_bare"]) - 1
            ratios["bare_vs_hf_bare"] = paired(times["hf_bare"], times["bare"])
        row["ratios"] = ratios
        row["doubts"] = batch_doubts(row)
        report["batches"].append(row)
    if chain_vs_hf if chain_vs_hf is not None else (hf is not None):
        say("chain alone vs Hugging Face's LogitsProcessorList")
        report["chain_vs_hf_processors"] = bench_chain_vs_hf(repeats=max(repeats, 5), device=dev, seed=seed)
    report["load"] = {"before": load_before, "after": machine_load()}
    busy = busy_note(load_before, report["load"]["after"])
    report["warnings"] = ([busy] if busy else []) + [
        f"batch {row['batch_size']}: " + "; ".join(row["doubts"]) + ": its ratios are withheld (rerun with more "
        "--repeats, on an idle machine)" for row in report["batches"] if row["doubts"]]
    report["trustworthy"] = not report["warnings"]
    return report



# -- printing ----------------------------------------------------------------------------------------------

LABELS = {"samplekit": "samplekit generate (chain)", "bare": "bare cached forward loop",
          "topk": "bare loop, top-k for argmax", "chain": "chain alone", "naive": "guide's plain loop",
          "hf": "HF generate (sampling)", "hf_bare": "HF bare cached loop"}


def print_report(report: dict[str, Any], console=None) -> None:
    """Pretty-print ``run_bench``'s dict as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    cfg = report["config"]
    console.print(f"[bold]{report['model']}[/bold]: {cfg['n_layers']} layers, {cfg['n_heads']} heads, "
                  f"{cfg['emb_dim']} wide, vocab {cfg['vocab_size']}, context {cfg['context_length']}; "
                  f"{report['parameters'] / 1e6:.1f}M parameters")
    console.print(f"{report['device']}, {report['threads']} torch threads ({report['cpus']} CPUs), "
                  f"torch {report['torch']}, transformers {report['transformers'] or '-'}; "
                  f"{report['prompt_tokens']} prompt + {report['new_tokens']} new tokens, "
                  f"median of {report['repeats']} interleaved repeats")
    console.print("chain: " + " -> ".join(report["chain"]) + f"; step strategy: {report['strategy']}")
    for note in report.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {note}")
    for warning in report.get("warnings", []):  # the figures below are not to be trusted: said first
        console.print(f"[bold red]warning:[/bold red] {warning}")
    hf = report.get("hf_settings")
    if hf is not None and hf["exact"]:
        console.print("HF generate runs the chain's equivalent: "
                      + ", ".join(f"{k}={v!r}" for k, v in hf["generate"].items()))
    table = Table(title="decoding")
    for column in ("batch", "variant", "tokens/s", "ms/token", "peak MiB", "vs samplekit"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for row in report["batches"]:
        base = row["samplekit"]["seconds"]
        for key in ("samplekit", "bare", "topk", "chain", "naive", "hf", "hf_bare"):
            if key not in row:
                continue
            v = row[key]
            mem = "-" if v["peak_mem_mib"] is None else f"{v['peak_mem_mib']:.0f}"
            rate = "-" if key == "chain" else f"{v['tokens_per_s']:.1f}"
            table.add_row(str(row["batch_size"]), LABELS[key], rate, f"{v['ms_per_token']:.3f}", mem,
                          f"{v['seconds'] / base:.3f}x")
        table.add_section()
    console.print(table)
    ratios = Table(title="ratios")
    ratios.add_column("batch", justify="right")
    ratios.add_column("measure")
    ratios.add_column("value", justify="right")
    names = {"overhead_vs_bare": "samplekit overhead over the bare cached loop",
             "overhead_vs_bare_best": "  the same, best of the repeats",
             "topk_overhead_vs_bare": "top-k alone over the bare loop (any top-k sampler pays it)",
             "chain_share": "chain's share of samplekit's time",
             "speedup_vs_naive": "speed-up over a plain loop without a cache",
             "speedup_vs_hf": "speed-up over HF generate",
             "hf_overhead_vs_hf_bare": "HF generate overhead over HF's bare loop",
             "bare_vs_hf_bare": "bare loop speed-up over HF's bare loop"}
    for row in report["batches"]:
        if row.get("doubts"):  # ratios that would contradict the table above: not printed
            ratios.add_row(str(row["batch_size"]), "withheld: the repeats disagree (see the warning)", "-")
            ratios.add_section()
            continue
        for key, value in row["ratios"].items():
            shown = f"{value:+.1%}" if key in ("overhead_vs_bare", "overhead_vs_bare_best",
                                               "topk_overhead_vs_bare", "hf_overhead_vs_hf_bare") else (
                f"{value:.1%}" if key == "chain_share" else f"{value:.2f}x")
            ratios.add_row(str(row["batch_size"]), names[key], shown)
        ratios.add_section()
    console.print(ratios)
    hfp = report.get("chain_vs_hf_processors")
    if hfp:
        line = (f"chain alone ({hfp['chain']}) on [{hfp['rows']}, {hfp['vocab']}]: "
                f"samplekit {hfp['samplekit_ms']:.2f} ms")
        if "hf_ms" in hfp:
            line += f", HF LogitsProcessorList + softmax + multinomial {hfp['hf_ms']:.2f} ms: ratio {hfp['ratio']:.3f}"
        console.print(line)
