"""``samplekit bench --workload ragged``: throughput on many requests of different lengths.

A fixed, seeded workload: ``requests`` prompts whose lengths spread from 4 to 200 tokens and whose
``max_new_tokens`` spread from 8 to 256 (some end earlier, at end-of-text), all through one chain
with per-request seeds. A model with a short context gets shorter spreads, so that a static batch
(its longest prompt, then its longest output) still fits: prompts up to a fifth of the context
(51 tokens for the demo model's 256), outputs up to the rest (205). Each variant serves the whole workload with ``batch`` rows at a time and
is timed on the useful tokens (each request's own new tokens, up to its limit or end-of-text):

- ``scheduler``: ``samplekit.scheduler.Scheduler`` (continuous batching, batch-invariant when the
  model has the mode), and its slot utilisation;
- ``scheduler (plain forward)``: the same without the batch-invariant forward;
- ``static``: samplekit's ``generate`` on consecutive batches of ``batch`` requests, each batch
  running until its last row ends (today's way of running many prompts);
- ``static, sorted``: the same after sorting the requests by prompt plus output length;
- ``hf static`` (transformers importable; a GPTModel, converted, or a Hugging Face model): Hugging Face's ``generate`` on consecutive
  batches, left-padded, each batch decoding to its longest row's limit (``generate`` takes one
  ``max_new_tokens`` per batch), the same sampling settings; only each request's own tokens count.

With ``compare=("hf-batch",)`` the variants are the scheduler and transformers' own continuous
batching (samplekit.bench.hf_batch) on the same model and requests, alternated ``repeats`` times
(medians count), each timed in wall-clock and in CPU seconds (the process's, every thread) and in
its model's forward passes (forward hooks): a GPTModel runs the scheduler on itself and, as
``scheduler, transformers model``, on its converted transformers twin, which is also the model
transformers' continuous batching serves; a Hugging Face model serves all of them.

A benchmark, never a test: the variants run one after the other in one process, and the ratios
between them are what to quote.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any

import torch

from samplekit.chain import Chain
from samplekit.padding import left_padded
from samplekit.params import Param
from samplekit.processor import Processor
from samplekit.requests import Request

PROMPT_RANGE, NEW_RANGE = (4, 200), (8, 256)


def ragged_workload(count: int, vocab: int, context: int, seed: int = 0, *,
                    open_ended: bool = False) -> list[Request]:
    """``count`` requests: prompt lengths uniform in PROMPT_RANGE, max_new_tokens in NEW_RANGE,
    both shortened for a short ``context`` (module docstring); random token ids; seed = its index
    + ``seed``. ``open_ended``: every max_new_tokens is the longest (the request ends at
    end-of-text, at a step nobody knows in advance: see EndHazard)."""
    longest_prompt = min(PROMPT_RANGE[1], context // 5)
    longest_new = min(NEW_RANGE[1], context - longest_prompt)
    rng = random.Random(seed)
    work = []
    for i in range(count):
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(PROMPT_RANGE[0], longest_prompt))]
        new = rng.randint(NEW_RANGE[0], longest_new)
        work.append(Request(prompt=prompt, id=i, seed=seed + i, max_new_tokens=longest_new if open_ended else new))
    return work


class EndHazard(Processor):
    """Benchmark-only: end-of-text gets probability ``p`` at every step, whatever the model says,
    so open-ended outputs end after a geometric number of tokens (mean about 1/p), known to nobody
    in advance, as chat replies are. The other tokens keep their relative probabilities."""

    name = "end_hazard"
    params = (Param("p", "float", 1 / 64, "end-of-text's probability at each step", low=0.0, high=1.0),
              Param("eos", "int", 0, "the end-of-text id", low=0))

    def process(self, input_ids, scores, ctx):
        scores = scores.clone()
        scores[:, self.eos] = float("-inf")
        others = scores.logsumexp(dim=-1)
        scores[:, self.eos] = others + math.log(self.p / (1 - self.p))
        return scores


def run_workload(model, tokenizer, chain: Any, *, requests: int = 256, batch: int = 16, seed: int = 0,
                 compare_hf: bool = True, open_ended: bool = False, compare: tuple[str, ...] = (),
                 repeats: int = 1, progress=None) -> dict[str, Any]:
    """Serve the workload with every variant; a JSON-able dict of tokens/s, requests/s and ratios.
    ``open_ended``: the open-ended workload (ragged_workload, EndHazard before the selector); its
    static batches can only be sorted by prompt length, and transformers is not compared.
    ``compare=("hf-batch",)``: the scheduler against transformers' continuous batching instead
    (module docstring), ``repeats`` times each."""
    from samplekit.engine import generate, resolve_chain
    from samplekit.protocol import model_context_length, support
    from samplekit.scheduler import Scheduler

    say = progress or (lambda message: None)
    chain = resolve_chain(chain)
    vocab, context = model.config.vocab_size, model_context_length(model)
    work = ragged_workload(requests, vocab, context, seed, open_ended=open_ended)
    eos = tokenizer.eot_token if tokenizer is not None and hasattr(tokenizer, "eot_token") else None
    if eos is None:
        eos = next(iter(getattr(model, "eos_token_ids", ()) or ()), vocab - 1)
    if open_ended:
        *logits, selector = chain.processors
        chain = Chain([*logits, EndHazard(eos=eos), selector], checked=chain.checked, source=chain.source)
    for r in work:
        r.chain = chain
    runs: dict[str, list[dict[str, Any]]] = {}

    def timed(name: str, fn, module: torch.nn.Module | None = None) -> None:
        say(f"{name}: {requests} requests, batch {batch}")
        with ForwardClock(module) as clock:
            start, cpu = time.perf_counter(), time.process_time()
            tokens, extra = fn()
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        run = {"seconds": seconds, "cpu_seconds": cpu, "tokens": tokens, "tokens_per_s": tokens / seconds,
               "requests_per_s": requests / seconds, **extra}
        if clock.seconds:
            run["forward_seconds"] = clock.seconds
            run["forward_ms_per_token"] = 1000 * clock.seconds / tokens
        runs.setdefault(name, []).append(run)

    def scheduler(on, invariant: bool):
        def serve():
            sched = Scheduler(on, tokenizer=tokenizer, max_batch=batch, batch_invariant=invariant)
            results = list(sched.run(_fresh(work)))
            return sum(len(r.samples[0].tokens) for r in results), {"utilisation": sched.utilisation}
        return serve

    def static(order):
        def serve():
            done = 0
            for i in range(0, len(order), batch):
                group = order[i:i + batch]
                out = generate(model, [r.prompt for r in group], chain=chain, seed=[r.seed for r in group],
                               max_new_tokens=max(r.max_new_tokens for r in group), tokenizer=tokenizer)
                done += sum(min(len(o.tokens), r.max_new_tokens) for o, r in zip(out, group))
            return done, {}
        return serve

    invariant = support(model).batch_invariant
    if "hf-batch" in compare:
        from samplekit.bench.hf_batch import hf_continuous_batching

        hf, twin = _transformers_twin(model)
        base = "hf continuous batching"
        for _ in range(repeats):
            timed("scheduler", scheduler(model, invariant), model)
            if twin is not None:
                timed("scheduler, transformers model", scheduler(twin, support(twin).batch_invariant), hf)
            timed(base, lambda: hf_continuous_batching(hf, _fresh(work), batch, eos, chain, seed), hf)
    else:
        base = "static"
        timed("scheduler", scheduler(model, invariant))
        if invariant:
            timed("scheduler (plain forward)", scheduler(model, False))
        timed("static", static(work))
        timed("static, sorted", static(sorted(work, key=lambda r: (len(r.prompt) + r.max_new_tokens))))
        if compare_hf and not open_ended and _has_transformers() and (hasattr(model, "trf_blocks") or _is_hf(model)):
            timed("hf static", lambda: _hf_static(model, work, batch, eos, chain))
    variants = {name: _median_run(done) for name, done in runs.items()}
    ratios = {f"{name} / {base}": v["tokens_per_s"] / variants[base]["tokens_per_s"]
              for name, v in variants.items() if name != base}
    if base != "static":
        ratios.update({f"{name} / {base}, cpu": variants[base]["cpu_seconds"] / v["cpu_seconds"]
                       for name, v in variants.items() if name != base})
    if "hf static" in variants:
        ratios["scheduler / hf static"] = variants["scheduler"]["tokens_per_s"] / variants["hf static"]["tokens_per_s"]
    lengths = [len(r.prompt) for r in work]
    return {"requests": requests, "batch": batch, "workload": "open-ended" if open_ended else "ragged",
            "chain": [str(p) for p in chain.processors], "base": base, "repeats": len(runs[base]),
            "threads": torch.get_num_threads(),
            "prompt_tokens_median": statistics.median(lengths), "variants": variants, "ratios": ratios}


class ForwardClock:
    """Seconds spent in ``module``'s forward passes while the block runs (forward hooks; nothing
    when ``module`` is None)."""

    def __init__(self, module: torch.nn.Module | None):
        self.module, self.seconds, self._hooks, self._started = module, 0.0, [], []

    def __enter__(self) -> "ForwardClock":
        if self.module is not None:
            self._hooks = [self.module.register_forward_pre_hook(lambda *_: self._started.append(time.perf_counter())),
                           self.module.register_forward_hook(lambda *_: self._stop())]
        return self

    def _stop(self) -> None:
        self.seconds += time.perf_counter() - self._started.pop()

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time, its CPU time the median of the runs' (one run: itself)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
    return chosen


def _transformers_twin(model):
    """(the transformers model, samplekit's HFModel of it or None): a Hugging Face model is its
    own; a GPTModel is converted (the same weights) and its twin wraps the converted model."""
    if _is_hf(model):
        return model.model, None
    if not _has_transformers() or not hasattr(model, "trf_blocks"):
        raise ValueError("--compare hf-batch needs transformers (pip install 'samplekit-lm[hf]') and a GPTModel "
                         "or a Hugging Face model (--model FOLDER)")
    from samplekit.hf.export import to_hf_gpt2
    from samplekit.hf.model import HFModel

    hf = to_hf_gpt2(model).eval()
    return hf, HFModel(hf)


def print_workload_report(report: dict[str, Any], console=None) -> None:
    """``run_workload``'s dict as a table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    base = report.get("base", "static")
    console.print(f"[bold]{report.get('model', 'model')}[/bold]: {report['requests']} requests (median prompt "
                  f"{report['prompt_tokens_median']:.0f} tokens), {report['batch']} rows at a time; chain: "
                  + " -> ".join(report["chain"]))
    timing = base != "static"  # the hf-batch comparison: CPU and forward time too
    repeats = f", median of {report['repeats']} runs" if report.get("repeats", 1) > 1 else ""
    table = Table(title=f"{report['workload']} workload (useful tokens: each request's own, up to its limit or "
                        f"end-of-text{repeats})" + (f"; speed and CPU efficiency relative to {base}" if timing else ""))
    columns = ["variant", "wall s", *(["CPU s", "forward ms/token"] if timing else []), "tokens/s",
               *([] if timing else ["requests/s"]), "speed" if timing else "vs static",
               *(["CPU efficiency"] if timing else []), "slot use"]
    for column in columns:
        table.add_column(column, justify="right")
    variants = report["variants"]
    for name, v in variants.items():
        use = f"{v['utilisation']:.0%}" if "utilisation" in v else ""
        speed = f"{v['tokens_per_s'] / variants[base]['tokens_per_s']:.2f}x"
        if timing:
            forward = f"{v['forward_ms_per_token']:.2f}" if "forward_ms_per_token" in v else ""
            cpu = f"{variants[base]['cpu_seconds'] / v['cpu_seconds']:.2f}x"
            table.add_row(name, f"{v['seconds']:.1f}", f"{v['cpu_seconds']:.1f}", forward, f"{v['tokens_per_s']:.1f}",
                          speed, cpu, use)
        else:
            table.add_row(name, f"{v['seconds']:.1f}", f"{v['tokens_per_s']:.1f}", f"{v['requests_per_s']:.2f}",
                          speed, use)
    console.print(table)
    if "scheduler / hf static" in report["ratios"]:
        console.print(f"scheduler / hf static: {report['ratios']['scheduler / hf static']:.2f}x")


def _fresh(work: list[Request]) -> list[Request]:
    return [Request(prompt=r.prompt, id=r.id, seed=r.seed, max_new_tokens=r.max_new_tokens, chain=r.chain)
            for r in work]


def _has_transformers() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def _is_hf(model) -> bool:
    from samplekit.hf.model import HFModel

    return isinstance(model, HFModel)


def _hf_static(model, work: list[Request], batch: int, eos: int | None, chain: Chain):
    """Hugging Face generate on consecutive batches: left-padded, the batch's longest limit, the
    chain's equivalent settings (or the nearest: samplekit.bench.hf_settings, in the result)."""
    from transformers import GenerationConfig

    from samplekit.bench.hf_settings import NEUTRAL, hf_settings
    from samplekit.hf.export import to_hf_gpt2

    settings = hf_settings(chain)

    hf = model.model if _is_hf(model) else to_hf_gpt2(model)
    done = 0
    for i in range(0, len(work), batch):
        group = work[i:i + batch]
        ids, mask = left_padded([r.prompt for r in group])
        width = ids.shape[1]
        config = GenerationConfig(**{**NEUTRAL, **settings.kwargs}, pad_token_id=0,
                                  max_new_tokens=max(r.max_new_tokens for r in group), eos_token_id=eos,
                                  bos_token_id=None)
        torch.manual_seed(group[0].seed)
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=mask.long(), generation_config=config)[:, width:]
        for row, r in zip(out.tolist(), group):
            row = row[:r.max_new_tokens]
            done += row.index(eos) if eos is not None and eos in row else len(row)
    return done, {"hf_settings": settings.to_dict()}
