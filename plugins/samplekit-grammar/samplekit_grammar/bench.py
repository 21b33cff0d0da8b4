"""``samplekit bench --workload constrained``: what a JSON schema in the chain costs per token.

Registered through samplekit's ``register_benchmarks`` hook (samplekit_grammar's hookimpl).
``--option schema=FILE`` times another schema than ``BENCH_SCHEMA``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from samplekit import Chain, generate, get_registry
from samplekit.bench import Benchmark, BenchSettings, paired, prepare, timed

__all__ = ["BENCH_SCHEMA", "CONSTRAINED", "print_constrained_report", "run_constrained_bench"]

# An array of at least 64 records, each with a free-text field: a run of 128 new tokens can never
# complete it, so every step of the constrained run is a constrained step, and it mixes the two
# kinds llguidance computes: structure (a few tokens allowed) and free text (nearly all allowed).
BENCH_SCHEMA = {
    "type": "array", "minItems": 64,
    "items": {"type": "object", "required": ["id", "kind", "text"], "additionalProperties": False,
              "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 100000},
                             "kind": {"enum": ["note", "quote", "question"]},
                             "text": {"type": "string"}}},
}


def run_constrained_bench(model: Any = None, config: Any = None, *, schema: Any = None, tokenizer: Any = None,
                          batch_sizes=(1, 8), prompt_tokens: int = 32, new_tokens: int = 128, repeats: int = 3,
                          device: str = "cpu", seed: int = 0, progress=None) -> dict[str, Any]:
    """Per-token time of the chain with a ``json_schema`` processor first (``schema``, default
    BENCH_SCHEMA) against the same chain unconstrained, interleaved in one process; the ratio is
    the median of each repeat's pair (also of CPU time, ``cpu_ratio``: steadier on a busy
    machine, exact with one torch thread). Both runs decode text (the constraint needs the tokenizer)
    and never stop early on end-of-text; ``complete_rows`` counts constrained rows that finished
    before ``new_tokens`` (their steps are then fewer: ms/token divides by the steps run)."""
    settings = BenchSettings(model=model, config=config, batch_sizes=tuple(batch_sizes), prompt_tokens=prompt_tokens,
                             new_tokens=new_tokens, repeats=repeats, device=device, seed=seed,
                             progress=progress or (lambda message: None))
    return _measure(settings, schema, tokenizer)


def _measure(settings: BenchSettings, schema: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    s = settings
    if s.repeats < 1 or s.new_tokens < 1 or s.prompt_tokens < 1 or not s.batch_sizes:
        raise ValueError("repeats, new_tokens, prompt_tokens must be >= 1 and batch_sizes non-empty")
    dev = torch.device(s.device)
    net, name = s.load_model()
    tokenizer = tokenizer if tokenizer is not None else s.tokenizer()
    chain = s.chain()
    constraint = get_registry().create("json_schema", {"schema": BENCH_SCHEMA if schema is None else schema})
    constrained = Chain([constraint, *chain.processors], checked=chain.checked, source=chain.source)
    prepare(net)
    vocab = net.config.vocab_size
    report: dict[str, Any] = {
        "model": name, "tokenizer": getattr(tokenizer, "name", type(tokenizer).__name__),
        "chain": [str(p) for p in chain.processors], "schema": "default" if schema is None else "given",
        "device": str(dev), "threads": torch.get_num_threads(), "prompt_tokens": s.prompt_tokens,
        "new_tokens": s.new_tokens, "repeats": s.repeats, "batches": [],
    }
    gen = torch.Generator().manual_seed(s.seed)
    for B in s.batch_sizes:
        prompts = torch.randint(0, min(vocab, getattr(tokenizer, "n_vocab", vocab)) - 1, (B, s.prompt_tokens),
                                generator=gen).to(dev)
        seeds = [s.seed + i for i in range(B)]
        steps: dict[str, int] = {}

        def decode(key: str, with_chain: Chain):
            results = generate(net, prompts, chain=with_chain, max_new_tokens=s.new_tokens, seed=seeds,
                               tokenizer=tokenizer, stop_on_eos=False)
            steps[key] = max(len(r.tokens) for r in results)
            return results

        variants = {"unconstrained": lambda: decode("unconstrained", chain),
                    "constrained": lambda: decode("constrained", constrained)}
        s.progress(f"batch {B}: warm-up")
        complete = sum(r.finish_reason == "constraint" for r in variants["constrained"]())
        variants["unconstrained"]()
        times: dict[str, list[float]] = {k: [] for k in variants}
        per_token: dict[str, list[float]] = {k: [] for k in variants}
        cpu_per_token: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(s.repeats):
            s.progress(f"batch {B}: repeat {r + 1}/{s.repeats}")
            for key, fn in variants.items():
                cpu = time.process_time()
                t = timed(fn, dev)
                times[key].append(t)
                per_token[key].append(t / max(steps[key], 1))
                cpu_per_token[key].append((time.process_time() - cpu) / max(steps[key], 1))
        row: dict[str, Any] = {"batch_size": B, "complete_rows": complete}
        for key in variants:
            row[key] = {"ms_per_token": 1000 * statistics.median(per_token[key]),
                        "cpu_ms_per_token": 1000 * statistics.median(cpu_per_token[key]),
                        "steps": steps[key], "all_seconds": times[key]}
        row["ratio"] = paired(per_token["constrained"], per_token["unconstrained"])
        # CPU time of the whole process (every thread): steadier than wall time on a shared machine
        row["cpu_ratio"] = paired(cpu_per_token["constrained"], cpu_per_token["unconstrained"])
        report["batches"].append(row)
    return report


def print_constrained_report(report: dict[str, Any], console=None) -> None:
    """``run_constrained_bench``'s dict as a table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]{report['model']}[/bold], tokenizer {report['tokenizer']}; {report['device']}, "
                  f"{report['threads']} torch threads; {report['prompt_tokens']} prompt + {report['new_tokens']} new "
                  f"tokens, median of {report['repeats']} interleaved repeats")
    console.print("chain: " + " -> ".join(report["chain"]) + f"; constrained: json_schema ({report['schema']} "
                  "schema) first")
    table = Table(title="constrained decoding (ms per decoding step of the whole batch)")
    for column in ("batch", "unconstrained", "constrained", "ratio", "CPU-time ratio", "complete rows"):
        table.add_column(column, justify="right")
    for row in report["batches"]:
        table.add_row(str(row["batch_size"]), f"{row['unconstrained']['ms_per_token']:.3f}",
                      f"{row['constrained']['ms_per_token']:.3f}", f"{row['ratio']:.3f}x", f"{row['cpu_ratio']:.3f}x",
                      f"{row['complete_rows']}/{row['batch_size']}")
    console.print(table)


def _run(settings: BenchSettings) -> dict[str, Any]:
    """The benchmark's entry: ``--option schema=FILE`` read as samplekit reads user files."""
    from samplekit.safe_io import load_json_file

    path = settings.options.get("schema")
    schema = load_json_file(path, what="JSON schema file") if path is not None else None
    settings.progress(f"constrained vs unconstrained, {len(settings.batch_sizes)} batch size(s) x "
                      f"{1 + settings.repeats} runs of {settings.new_tokens} steps each")
    return _measure(settings, schema)


CONSTRAINED = Benchmark(
    "constrained", "the chain with a json_schema processor first against the same chain unconstrained: "
    "ms per token and their ratio", _run, print_constrained_report,
    options={"schema": "a JSON schema file (default: an array of 64+ records with free text)"})
