"""``samplekit bench --workload precision``: decoding speed per dtype (and compiled), and what half
precision does to the tokens.

For the model (``--shape gpt2-small`` for GPT-2-small's shape; default the demo model), each dtype
of ``--option dtypes=float32,bfloat16,float16`` (and, with ``--option compile=yes``, each compiled
too): tokens per second of the bare cached loop (prefill, then one cached forward and an argmax per
token: the forward's speed, no sampling) at each ``--batch-size`` (default 1), variants alternated
``--repeats`` times, medians reported with the ratio to float32 and each variant's warm-up (its
first call: the compilation, for a compiled forward).

Greedy agreement (``--option agreement=yes``, the default): on the demo model and its held-out
text (samplekit.lab's passages), teacher-forced, the fraction of positions where each dtype's
argmax equals float32's (1.0: every greedy token the same).
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch

from samplekit.bench.benchmark import Benchmark, BenchSettings
from samplekit.bench.loops import bare_cached_loop
from samplekit.bench.trust import busy_note, machine_load
from samplekit.hookspecs import hookimpl
from samplekit.model.precision import model_dtype, parse_dtype, set_precision

__all__ = ["PRECISION", "greedy_agreement", "heldout_windows", "register_benchmarks", "run_precision"]

DTYPES = ("float32", "bfloat16", "float16")


def heldout_windows(context_length: int, limit: int | None = None) -> list[torch.Tensor]:
    """The demo model's held-out passages (prompt and continuation), encoded, each ``[1, T]``
    cut to ``context_length`` tokens."""
    from samplekit.lab.corpus import encode_pair, load_heldout
    from samplekit.model.checkpoint import load_checkpoint
    from samplekit.model.tokenizer import tokenizer_for_checkpoint

    _, info = load_checkpoint("demo", "cpu")
    enc = tokenizer_for_checkpoint(info)
    _, passages = load_heldout()
    out = []
    for passage in passages[:limit]:
        prompt, continuation = encode_pair(enc, passage.prompt, passage.continuation)
        ids = (prompt + continuation)[:context_length]
        if len(ids) > 1:
            out.append(torch.tensor([ids]))
    return out


@torch.inference_mode()
def greedy_agreement(reference, model, windows: list[torch.Tensor]) -> float:
    """The fraction of positions of ``windows`` (teacher-forced) where ``model``'s argmax equals
    ``reference``'s."""
    same = total = 0
    for ids in windows:
        a, b = reference(ids).argmax(-1), model(ids).argmax(-1)
        same += int((a == b).sum())
        total += a.numel()
    return same / total


def _variants(settings: BenchSettings) -> list[tuple[str, str, bool]]:
    names = [n.strip() for n in settings.options.get("dtypes", ",".join(DTYPES)).split(",") if n.strip()]
    for name in names:
        parse_dtype(name)  # an unknown name: one clear error
    if "float32" not in names:
        names.insert(0, "float32")
    compiled = _yes(settings.options.get("compile", "no"), "compile")
    out = [(n, n, False) for n in names]
    return out + [(f"{n} compiled", n, True) for n in names] if compiled else out


def _yes(value: str, key: str) -> bool:
    if value.lower() in ("yes", "true", "1", "on"):
        return True
    if value.lower() in ("no", "false", "0", "off"):
        return False
    raise ValueError(f"--option {key}={value!r}: use yes or no")


def run_precision(settings: BenchSettings) -> dict[str, Any]:
    variants = _variants(settings)
    agreement = _yes(settings.options.get("agreement", "yes"), "agreement")
    base, name = settings.load_model()
    vocab = base.config.vocab_size
    models = {}
    for label, dtype, compiled in variants:
        settings.progress(f"{label}: converting{' and compiling (the first call compiles)' * compiled}")
        model = set_precision(copy.deepcopy(base), dtype, compile=compiled)
        getattr(model, "prepare_for_inference", lambda: None)()
        models[label] = model
    generator = torch.Generator().manual_seed(settings.seed)
    report: dict[str, Any] = {"model": name, "threads": torch.get_num_threads(), "load_before": machine_load(),
                              "new_tokens": settings.new_tokens, "batches": {}, "warmup_s": {}}
    for batch in settings.batch_sizes:
        prompts = torch.randint(0, vocab, (batch, settings.prompt_tokens), generator=generator).to(settings.device)
        for label, model in models.items():
            if label not in report["warmup_s"]:
                start = time.perf_counter()
                bare_cached_loop(model, prompts, 2)
                report["warmup_s"][label] = round(time.perf_counter() - start, 2)
            else:
                bare_cached_loop(model, prompts, 2)
        rates: dict[str, list[float]] = {label: [] for label in models}
        for repeat in range(settings.repeats):
            settings.progress(f"batch {batch}: {', '.join(models)} (round {repeat + 1} of {settings.repeats})")
            for label, model in models.items():
                start = time.perf_counter()
                bare_cached_loop(model, prompts, settings.new_tokens)
                rates[label].append(batch * settings.new_tokens / (time.perf_counter() - start))
        medians = {label: statistics.median(r) for label, r in rates.items()}
        report["batches"][str(batch)] = {
            "tokens_per_s": {k: round(v, 1) for k, v in medians.items()},
            "vs_float32": {k: round(v / medians["float32"], 2) for k, v in medians.items()},
            "repeats": {k: [round(x, 1) for x in r] for k, r in rates.items()}}
    report["load_after"] = machine_load()
    report["note"] = busy_note(report["load_before"], report["load_after"])
    if agreement:
        settings.progress("greedy agreement with float32 on the demo model's held-out text")
        report["agreement"] = demo_agreement([label for label, _, compiled in variants if not compiled],
                                             {label: dtype for label, dtype, _ in variants})
    return report


def demo_agreement(labels: list[str], dtypes: dict[str, str]) -> dict[str, Any]:
    """Each dtype's greedy agreement with float32 on the demo model's held-out text."""
    from samplekit.model.checkpoint import load_checkpoint

    reference, _ = load_checkpoint("demo", "cpu")
    reference.eval()
    if model_dtype(reference) != torch.float32:
        reference.to(torch.float32)
    windows = heldout_windows(reference.context_length)
    out = {"passages": len(windows), "positions": sum(w.shape[1] for w in windows), "agreement": {}}
    for label in labels:
        model = set_precision(copy.deepcopy(reference), dtypes[label])
        out["agreement"][label] = round(greedy_agreement(reference, model, windows), 4)
    return out


def show(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    threads = report["threads"]
    table = Table(title=f"{report['model']}: decoding tokens/s by dtype ({threads} thread{'s' * (threads > 1)}, "
                        f"{report['new_tokens']} new tokens, bare cached loop)")
    for column in ("batch", "variant", "tokens/s", "vs float32", "warm-up s"):
        table.add_column(column, justify="right")
    for batch, b in report["batches"].items():
        for label, rate in b["tokens_per_s"].items():
            table.add_row(batch, label, f"{rate:.1f}", f"{b['vs_float32'][label]:.2f}x",
                          f"{report['warmup_s'][label]:.2f}")
    console.print(table)
    found = report.get("agreement")
    if found:
        said = ", ".join(f"{k} {v:.4f}" for k, v in found["agreement"].items())
        console.print(f"greedy agreement with float32 on the demo model's held-out text ({found['passages']} "
                      f"passages, {found['positions']} positions, teacher-forced): {said}")
    console.print(f"load average {report['load_before']['load']:.2f} before, {report['load_after']['load']:.2f} "
                  "after")
    if report.get("note"):
        console.print(f"[yellow]note:[/yellow] {report['note']}")


PRECISION = Benchmark(
    "precision", "decoding tokens/s of the model in each dtype (and compiled, --option compile=yes) against "
    "float32, and each dtype's greedy agreement with float32 on the demo model's held-out text",
    run_precision, show, batch_sizes=(1,),
    options={"dtypes": "dtypes to compare with float32, comma-separated (default float32,bfloat16,float16)",
             "compile": "yes: also each dtype with torch.compile (default no)",
             "agreement": "no: skip the greedy agreement on the demo model (default yes)"})


@hookimpl
def register_benchmarks(register):
    register(PRECISION)
