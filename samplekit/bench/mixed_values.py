"""``samplekit bench --workload mixed-values``: requests that each carry their own sampling values.

A server's clients each send their own values. The workload: ``--requests`` prompts (random ids,
8 to 48 tokens), each generating ``--new-tokens`` tokens (no early end), served by the scheduler
``--batch-size`` rows at a time (default 16 and 32), in three variants on the same prompts and
seeds:

- ``shared``: every request with one setting (temperature 0.8, top_k 50, top_p 0.95);
- ``own values``: the same processors, each request with its own temperature in [0.2, 1.3],
  top_k in [20, 100] and top_p in [0.8, 1.0): one signature, so what it costs beyond ``shared``
  is what rows carrying their own values cost;
- ``mixed``: each request draws its own, as clients send them: temperature in [0.2, 1.3], top_p
  in [0.8, 1.0), top_k in [20, 100] or off (a quarter of the requests: no top_k), and a third
  with a presence and/or frequency penalty in [0.1, 1.0] (the others: none). Chains that differ
  in which processors they hold have different signatures (``Chain.signature``);
- ``mixed, one template``: the same values, each chain filled to the full template with neutral
  values (``Chain.fill_to``: top_k off, penalty 0), so that every request has one signature.

Reported: tokens/s of each, and its ratio to ``shared``. A request without top_k needs top-p over
the whole vocabulary, which costs more than top-p among top-k candidates whatever the grouping:
``mixed / shared`` holds that cost too, ``own values / shared`` does not. Beside it, the chain's own cost per step in
isolation (``chain_step_costs``: ``ChainRun.select`` on LM-like random logits, no model), for
the three variants: what the model's forward pass does not hide.

A benchmark, never a test: the variants alternate, ``--repeats`` times, and the medians count.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import torch

from samplekit.bench.benchmark import Benchmark, BenchSettings
from samplekit.chain import Chain
from samplekit.hookspecs import hookimpl
from samplekit.requests import Request

__all__ = ["MIXED_VALUES", "chain_step_costs", "mixed_chains", "register_benchmarks", "run_mixed_values"]

SHARED = {"temperature": 0.8, "top_k": 50, "top_p": 0.95}
PROMPT_RANGE = (8, 48)
VARIANTS = ("shared", "own values", "mixed", "mixed, one template")


def client_values(rng: random.Random) -> dict[str, Any]:
    """One request's values, as a client might send them (None: the field is not sent)."""
    penalised = rng.random() < 1 / 3
    return {
        "temperature": round(rng.uniform(0.2, 1.3), 3),
        "top_p": round(rng.uniform(0.8, 0.999), 3),
        "top_k": None if rng.random() < 0.25 else rng.randint(20, 100),
        "presence_penalty": round(rng.uniform(0.1, 1.0), 2) if penalised and rng.random() < 0.7 else None,
        "frequency_penalty": round(rng.uniform(0.1, 1.0), 2) if penalised and rng.random() < 0.7 else None,
    }


def chain_of(values: dict[str, Any]) -> Chain:
    """The chain a server builds from sent values (the fields not sent add nothing), in the serving
    order: penalties, temperature, top_k, top_p, multinomial."""
    specs: list = []
    for name in ("frequency_penalty", "presence_penalty"):
        if values.get(name) is not None:
            specs.append((name, {"penalty": values[name]}))
    specs.append(("temperature", {"value": values["temperature"]}))
    if values.get("top_k") is not None:
        specs.append(("top_k", {"k": values["top_k"]}))
    specs += [("top_p", {"p": values["top_p"]}), "multinomial"]
    return Chain.from_names(*specs)


def template() -> Chain:
    """Every processor the mixed requests use, in order: what ``fill_to`` fills their chains to."""
    return chain_of({"frequency_penalty": 0.0, "presence_penalty": 0.0, **SHARED})


def mixed_chains(count: int, seed: int = 0) -> dict[str, list[Chain]]:
    """Each variant's ``count`` chains (module docstring)."""
    rng = random.Random(seed)
    mixed = [chain_of(client_values(rng)) for _ in range(count)]
    own = [chain_of({"temperature": round(rng.uniform(0.2, 1.3), 3), "top_k": rng.randint(20, 100),
                     "top_p": round(rng.uniform(0.8, 0.999), 3)}) for _ in range(count)]
    full = template()
    shared = chain_of(SHARED)
    return {"shared": [shared] * count, "own values": own, "mixed": mixed,
            "mixed, one template": [c.fill_to(full) for c in mixed]}


def _requests(chains: list[Chain], vocab: int, new_tokens: int, seed: int) -> list[Request]:
    rng = random.Random(seed + 1)
    out = []
    for i, chain in enumerate(chains):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(*PROMPT_RANGE))]
        out.append(Request(prompt=prompt, id=i, chain=chain, seed=seed + i, max_new_tokens=new_tokens,
                           stop_on_eos=False))
    return out


def lm_like_logits(rows: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """``[rows, vocab]`` logits shaped like a language model's: Zipf-like by rank (each row its
    own order), plus noise, so nuclei and top-k cuts fall where a model's would."""
    ranks = torch.argsort(torch.rand(rows, vocab, generator=generator), dim=-1).float()  # (B, V) a random rank each
    return -1.3 * torch.log1p(ranks) + 0.5 * torch.randn(rows, vocab, generator=generator)


def chain_step_costs(batch: int, vocab: int = 50257, steps: int = 40, seed: int = 0, device: str = "cpu",
                     repeats: int = 3) -> dict[str, float]:
    """Milliseconds per step of the chain alone (``ChainRun.select`` on LM-like logits, after a
    warm-up), for ``batch`` rows and each variant (module docstring): one run per signature, as
    the scheduler runs each group."""
    chains = mixed_chains(batch, seed)
    generator = torch.Generator().manual_seed(seed)
    logits = [lm_like_logits(batch, vocab, generator).to(device) for _ in range(8)]
    ids = torch.randint(0, vocab, (batch, 24), generator=generator).to(device)

    def runs(variant: str) -> list[tuple[Any, list[int]]]:
        groups: dict[tuple, list[int]] = {}
        for r, c in enumerate(chains[variant]):
            groups.setdefault(c.signature(), []).append(r)
        made = []
        for rows in groups.values():
            own = [chains[variant][r] for r in rows]
            made.append((own[0].start(len(rows), seeds=rows, row_chains=own), rows))
        return made

    def measure(variant: str) -> float:
        made = runs(variant)
        index = {id(run): torch.tensor(rows, device=device) for run, rows in made}
        for step in range(steps + 2):  # two warm-up steps (the first verifies densely)
            if step == 2:
                if device != "cpu":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            scores = logits[step % len(logits)]
            for run, rows in made:
                picked = index[id(run)]
                run.select(ids.index_select(0, picked), scores.index_select(0, picked) if len(made) > 1 else scores)
        if device != "cpu":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps * 1000

    found: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            found[variant].append(measure(variant))
    out = {f"{v} ms/step": statistics.median(t) for v, t in found.items()}
    out["groups (mixed)"] = len({c.signature() for c in chains["mixed"]})
    for v in VARIANTS[1:]:
        out[f"{v} / shared"] = out["shared ms/step"] / out[f"{v} ms/step"]
    return out


def run_mixed_values(settings: BenchSettings) -> dict[str, Any]:
    """Each batch size: every variant served by the scheduler, interleaved ``repeats`` times."""
    from samplekit.scheduler import Scheduler

    model, name = settings.load_model()
    tokenizer = settings.tokenizer(required=False)
    vocab = model.config.vocab_size
    report: dict[str, Any] = {"model": name, "requests": settings.requests, "new_tokens": settings.new_tokens,
                              "batches": {}}
    for batch in settings.batch_sizes:
        chains = mixed_chains(settings.requests, settings.seed)
        seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        tokens: dict[str, int] = {}
        for repeat in range(settings.repeats):
            for variant in VARIANTS:
                settings.progress(f"batch {batch}, {variant}: {settings.requests} requests (repeat {repeat + 1} of "
                                  f"{settings.repeats})")
                work = _requests(chains[variant], vocab, settings.new_tokens, settings.seed)
                sched = Scheduler(model, tokenizer=tokenizer, max_batch=batch)
                start = time.perf_counter()
                results = list(sched.run(work))
                seconds[variant].append(time.perf_counter() - start)
                tokens[variant] = sum(len(s.tokens) for r in results for s in r.samples)
        rates = {v: tokens[v] / statistics.median(seconds[v]) for v in VARIANTS}
        report["batches"][str(batch)] = {
            "tokens_per_s": rates,
            **{f"{v} / shared": rates[v] / rates["shared"] for v in VARIANTS[1:]},
            "signatures (mixed)": len({c.signature() for c in chains["mixed"]}),
            "chain alone": chain_step_costs(batch, vocab, device=settings.device, seed=settings.seed),
        }
    return report


def show(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]{report['model']}[/bold]: {report['requests']} requests of {report['new_tokens']} tokens, "
                  "each with its own values (mixed) or one setting (shared)")
    table = Table(title="mixed-values workload (tokens/s through the scheduler; chain alone: ms per step)")
    for column in ("batch", "variant", "tokens/s", "vs shared", "chain alone ms/step", "vs shared (chain)"):
        table.add_column(column, justify="right")
    for batch, b in report["batches"].items():
        rates, alone = b["tokens_per_s"], b["chain alone"]
        for v in VARIANTS:
            label = f"{v} ({b['signatures (mixed)']} signatures)" if v == "mixed" else v
            table.add_row(batch, label, f"{rates[v]:.0f}", f"{rates[v] / rates['shared']:.2f}x",
                          f"{alone[f'{v} ms/step']:.2f}",
                          f"{alone['shared ms/step'] / alone[f'{v} ms/step']:.2f}x")
    console.print(table)


MIXED_VALUES = Benchmark(
    "mixed-values", "requests that each carry their own temperature, top_p, top_k and penalties, against one "
    "shared setting, through the scheduler: tokens/s and ratios, and the chain's own cost per step",
    run_mixed_values, show, batch_sizes=(16, 32))


@hookimpl
def register_benchmarks(register):
    register(MIXED_VALUES)
