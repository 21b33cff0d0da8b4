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
  ``generate`` (do_sample, temperature 0.8, top-k 50) on a GPT2LMHeadModel holding the same
  weights (for a Hugging Face model, ``samplekit.hf.HFModel``: on that very transformers model),
  and its own bare cached greedy loop.

Besides, the chain alone (temperature 0.8, top-k 50, top-p 0.95, multinomial) against Hugging
Face's LogitsProcessorList (the same warpers) + softmax + torch.multinomial on random logits
``[32, 50257]``.

Peak memory is measured on each variant's warm-up run: on CUDA ``max_memory_allocated``; on CPU
the growth of the process's peak resident set (Linux ``/proc/self/status`` VmHWM, reset through
``/proc/self/clear_refs``; elsewhere the ``ru_maxrss`` delta, which only shows new peaks).
Timings are float32, torch's default thread count; a benchmark, never a test.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import platform
import re
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from samplekit.chain import Chain
from samplekit.hf.export import to_hf_gpt2  # noqa: F401 - here before samplekit.hf existed
from samplekit.hf.model import HFModel
from samplekit.model.gpt import GPTModel, ModelConfig

SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-small": dict(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12),
    "tiny": dict(vocab_size=4096, context_length=256, emb_dim=256, n_heads=4, n_layers=4),
}
HF_CHAIN_ROWS, HF_CHAIN_VOCAB = 32, 50257


# -- models --------------------------------------------------------------------------------------------

def load_bench_model(spec: str | GPTModel | None, device: str | torch.device = "cpu",
                     seed: int = 0) -> tuple[GPTModel, str]:
    """A model and its name: a GPTModel, a shape name (random weights), "demo" or a checkpoint."""
    if isinstance(spec, torch.nn.Module):
        return spec.to(device).eval(), getattr(spec, "source", None) or type(spec).__name__
    spec = spec or "demo"
    if spec in SHAPES:
        torch.manual_seed(seed)
        cfg = ModelConfig(**SHAPES[spec], drop_rate=0.0, qkv_bias=True)
        return GPTModel(cfg).to(device).eval(), f"{spec} (random weights)"
    from samplekit.model.checkpoint import load_checkpoint

    model, info = load_checkpoint(spec, device)
    return model.eval(), str(spec)


# -- the variants: each runs once and returns its seconds -------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


@torch.inference_mode()
def bare_cached_loop(model, prompts: torch.Tensor, new_tokens: int,
                     pick: Callable[[torch.Tensor], torch.Tensor] = _argmax) -> torch.Tensor:
    """The floor: prefill, then one cached forward per token, ``pick`` (argmax), no chain."""
    cache = model.new_cache(prompts.shape[0])
    logits = model(prompts, cache=cache, last_only=True)[:, -1]
    out = [pick(logits)]
    for _ in range(new_tokens - 1):
        logits = model(out[-1][:, None], cache=cache)[:, -1]
        out.append(pick(logits))
    return torch.stack(out, 1)


def chain_top_k(chain: Chain, vocab_size: int) -> int | None:
    """The k of the chain's first top-k (a processor with ``keeps_top``), else None."""
    for p in chain.logits:
        keeps_top = getattr(p, "keeps_top", None)
        if callable(keeps_top) and (k := keeps_top(vocab_size)) is not None:
            return k
    return None


@torch.inference_mode()
def naive_loop(model, prompts: torch.Tensor, new_tokens: int, context_size: int,
               temperature: float = 0.8, top_k: int = 50, generator: torch.Generator | None = None):
    """The usage guide's loop: re-feed the (cropped) context every token; top-k, temperature, sample."""
    idx = prompts
    for _ in range(new_tokens):
        logits = model(idx[:, -context_size:])[:, -1, :]
        top_logits, _ = torch.topk(logits, top_k)
        logits = torch.where(logits < top_logits[:, -1:], torch.tensor(float("-inf")), logits)
        probs = torch.softmax(logits / temperature, dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1, generator=generator)), dim=1)
    return idx


@torch.inference_mode()
def chain_alone(chain: Chain, logits: Sequence[torch.Tensor], history: torch.Tensor, steps: int,
                seeds: Sequence[int] | None = None, generator: torch.Generator | None = None):
    run = chain.start(history.shape[0], seeds=seeds, generator=generator)
    for i in range(steps):
        run.select(history, logits[i % len(logits)])


@torch.inference_mode()
def hf_bare_loop(hf, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Hugging Face's own floor: the model with its cache, argmax. The cache argument is
    ``cache`` in transformers 5 (``past_key_values``, deprecated there, before)."""
    name = "cache" if "cache" in inspect.signature(type(hf).forward).parameters else "past_key_values"
    out = hf(prompts, use_cache=True, logits_to_keep=1)  # as HF's generate does
    token = out.logits[:, -1].argmax(-1)
    tokens = [token]
    for _ in range(new_tokens - 1):
        out = hf(token[:, None], use_cache=True, **{name: out[name]})
        token = out.logits[:, -1].argmax(-1)
        tokens.append(token)
    return torch.stack(tokens, 1)


def hf_generate(hf, prompts: torch.Tensor, new_tokens: int):
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=0.8, top_k=50, top_p=1.0,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                              eos_token_id=None, bos_token_id=None)
    with torch.inference_mode():
        return hf.generate(prompts, attention_mask=torch.ones_like(prompts), generation_config=config)


def hf_processor_list():
    from transformers import (LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    return LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(50), TopPLogitsWarper(0.95)])


@torch.inference_mode()
def hf_processors_select(processors, input_ids, scores, generator=None):
    probs = torch.softmax(processors(input_ids, scores), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


# -- memory ------------------------------------------------------------------------------------------------

class PeakMemory:
    """Peak memory growth (MiB) during a block: CUDA allocator, else resident set size."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mib: float | None = None

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            with open("/proc/self/status") as f:
                found = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
        except OSError:
            return None
        return int(found.group(1)) if found else None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.hwm = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.base, self.hwm = self._status("VmRSS"), True
        except OSError:
            pass
        if not self.hwm or self.base is None:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.hwm = False
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.hwm:
            self.mib = ((self._status("VmHWM") or self.base) - self.base) / 1024
        else:  # ru_maxrss: KiB on Linux, bytes on macOS
            scale = 2**20 if platform.system() == "Darwin" else 1024
            self.mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base) / scale
        return False


# -- the benchmark -------------------------------------------------------------------------------------------

def run_bench(model: str | GPTModel | None = None, config: Any = None, *, batch_sizes: Sequence[int] = (1, 8),
              prompt_tokens: int = 32, new_tokens: int = 128, compare: Sequence[str] = (),
              repeats: int = 3, device: str = "cpu", seed: int = 0, chain_vs_hf: bool | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure; return a JSON-able dict (see ``print_report``).

    ``model``: a GPTModel, a shape (``"gpt2-small"``, ``"tiny"``: random weights), ``"demo"`` or a
    checkpoint path. ``config``: the chain (anything ``engine.generate`` takes; default
    temperature 0.8, top-k 50, multinomial). ``compare``: any of "naive", "hf". ``chain_vs_hf``:
    also time the chain alone against HF's LogitsProcessorList (default: when "hf" is compared).
    """
    from samplekit import engine

    compare = tuple(compare)
    unknown = [c for c in compare if c not in ("naive", "hf")]
    if unknown:
        raise ValueError(f"unknown comparison {unknown[0]!r}: use naive and/or hf")
    if repeats < 1 or new_tokens < 1 or prompt_tokens < 1 or not batch_sizes:
        raise ValueError("repeats, new_tokens, prompt_tokens must be >= 1 and batch_sizes non-empty")
    say = progress or (lambda message: None)
    dev = torch.device(device)
    net, name = load_bench_model(model, dev, seed)
    chain = engine.resolve_chain(config)
    ctx = engine.model_context_length(net) or prompt_tokens + new_tokens
    if prompt_tokens + new_tokens > ctx:
        raise ValueError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the model's "
                         f"context_length {ctx}: the bare cached loop could not run")
    has_hf = importlib.util.find_spec("transformers") is not None
    hf = None
    if "hf" in compare and has_hf:
        say("converting the weights to GPT2LMHeadModel" if not isinstance(net, HFModel) else
            "Hugging Face generate runs on the same transformers model")
        hf = net.model if isinstance(net, HFModel) else to_hf_gpt2(net)
    engine._prepare(net)  # fuse q/k/v once, outside every timing
    vocab = net.config.vocab_size
    top_k = chain_top_k(chain, vocab)
    report: dict[str, Any] = {
        "model": name, "config": net.summary() if isinstance(net, HFModel) else
        {k: v for k, v in net.config.to_dict().items() if k != "drop_rate"},
        "parameters": net.num_parameters(), "chain": [str(p) for p in chain.processors],
        "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": _version("transformers") if has_hf else None, "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeats": repeats,
        "compare": list(compare), "strategy": chain.start(1).strategy.name, "batches": [],
    }
    if "hf" in compare and not has_hf:
        report["notes"] = ["--compare hf skipped: transformers is not installed (pip install 'samplekit[bench]')"]
    gen = torch.Generator().manual_seed(seed)
    for B in batch_sizes:
        prompts = torch.randint(0, vocab, (B, prompt_tokens), generator=gen).to(dev)
        logits = [torch.randn(B, vocab, generator=gen).mul_(3.0).to(dev) for _ in range(8)]
        seeds = [seed + i for i in range(B)]
        variants: dict[str, Callable[[], Any]] = {
            "samplekit": lambda: engine.generate(net, prompts, chain=chain, max_new_tokens=new_tokens,
                                                 seed=seeds, stop_on_eos=False),
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
            variants["hf"] = lambda: hf_generate(hf, prompts, new_tokens)
            variants["hf_bare"] = lambda: hf_bare_loop(hf, prompts, new_tokens)
        times: dict[str, list[float]] = {k: [] for k in variants}
        memory: dict[str, float | None] = {}
        for key, fn in variants.items():  # warm-up run, measuring peak memory
            say(f"batch {B}: warm-up {key}")
            with PeakMemory(dev) as peak:
                fn()
            memory[key] = peak.mib
        for r in range(repeats):
            say(f"batch {B}: repeat {r + 1}/{repeats}")
            for key, fn in variants.items():
                times[key].append(_timed(fn, dev))
        row: dict[str, Any] = {"batch_size": B}
        for key, values in times.items():
            t = statistics.median(values)
            row[key] = {"seconds": t, "ms_per_token": 1000 * t / new_tokens,
                        "tokens_per_s": B * new_tokens / t, "peak_mem_mib": memory[key],
                        "best_seconds": min(values), "all_seconds": values}
        ratios = {"overhead_vs_bare": _paired(times["samplekit"], times["bare"]) - 1,
                  # best-of-repeats: what each costs when the machine does not interfere
                  "overhead_vs_bare_best": row["samplekit"]["best_seconds"] / row["bare"]["best_seconds"] - 1}
        if "topk" in times:
            ratios["topk_overhead_vs_bare"] = _paired(times["topk"], times["bare"]) - 1
        ratios["chain_share"] = row["chain"]["seconds"] / row["samplekit"]["seconds"]
        if "naive" in times:
            ratios["speedup_vs_naive"] = _paired(times["naive"], times["samplekit"])
        if "hf" in times:
            ratios["speedup_vs_hf"] = _paired(times["hf"], times["samplekit"])
            ratios["hf_overhead_vs_hf_bare"] = _paired(times["hf"], times["hf_bare"]) - 1
            ratios["bare_vs_hf_bare"] = _paired(times["hf_bare"], times["bare"])
        row["ratios"] = ratios
        report["batches"].append(row)
    if chain_vs_hf if chain_vs_hf is not None else (hf is not None):
        say("chain alone vs Hugging Face's LogitsProcessorList")
        report["chain_vs_hf_processors"] = bench_chain_vs_hf(repeats=max(repeats, 5), device=dev, seed=seed)
    return report


def _paired(times: Sequence[float], base: Sequence[float]) -> float:
    """Median over the repeats of ``times[r] / base[r]`` (the two ran one after the other)."""
    return statistics.median(t / b for t, b in zip(times, base))


def bench_chain_vs_hf(*, rows: int = HF_CHAIN_ROWS, vocab: int = HF_CHAIN_VOCAB, calls: int = 20,
                      repeats: int = 5, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, Any]:
    """Temperature 0.8, top-k 50, top-p 0.95 and sampling on random logits [rows, vocab]: the
    samplekit chain (one shared generator) against HF's warpers + softmax + torch.multinomial."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.randn(rows, vocab, generator=gen).mul_(3.0).to(dev) for _ in range(4)]
    ids = torch.zeros(rows, 1, dtype=torch.long, device=dev)
    chain = Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 50}), ("top_p", {"p": 0.95}),
                             "multinomial")
    variants = {"samplekit": lambda: chain_alone(chain, scores, ids, calls, generator=torch.Generator(dev).manual_seed(seed))}
    if importlib.util.find_spec("transformers") is not None:
        processors = hf_processor_list()
        hf_gen = torch.Generator(dev).manual_seed(seed)
        variants["hf"] = lambda: [hf_processors_select(processors, ids, scores[i % 4], hf_gen) for i in range(calls)]
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for key, fn in variants.items():
            times[key].append(_timed(fn, dev))
    out: dict[str, Any] = {"rows": rows, "vocab": vocab,
                           "chain": "temperature 0.8, top_k 50, top_p 0.95, multinomial"}
    for key, values in times.items():
        out[f"{key}_ms"] = 1000 * statistics.median(values) / calls
    if "hf_ms" in out:
        out["ratio"] = out["samplekit_ms"] / out["hf_ms"]
    return out


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - any metadata problem: unknown
        return None


# -- printing -----------------------------------------------------------------------------------------------

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
             "speedup_vs_naive": "speed-up over the guide's plain loop",
             "speedup_vs_hf": "speed-up over HF generate",
             "hf_overhead_vs_hf_bare": "HF generate overhead over HF's bare loop",
             "bare_vs_hf_bare": "bare loop speed-up over HF's bare loop"}
    for row in report["batches"]:
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


# -- constrained decoding: a JSON schema in the chain (the samplekit-grammar plugin) ---------------------------

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


def bench_tokenizer(spec: Any):
    """The tokenizer a benchmark model decodes with: the demo model's for "demo" and the "tiny"
    shape (its vocabulary), GPT-2's tiktoken encoding for "gpt2-small" (TIKTOKEN_CACHE_DIR offline),
    a checkpoint's own, or a model's ``tokenizer`` attribute."""
    from samplekit.model.tokenizer import load_tokenizer, tokenizer_for_checkpoint

    if isinstance(spec, torch.nn.Module):
        tokenizer = getattr(spec, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"{type(spec).__name__} has no tokenizer: a constrained run needs one")
        return tokenizer
    if spec == "gpt2-small":
        return load_tokenizer("gpt2")
    from samplekit.model.checkpoint import load_checkpoint

    _, info = load_checkpoint("demo" if spec in (None, "tiny") else spec, "cpu")
    return tokenizer_for_checkpoint(info)


def run_constrained_bench(model: Any = None, config: Any = None, *, schema: Any = None, tokenizer: Any = None,
                          batch_sizes: Sequence[int] = (1, 8), prompt_tokens: int = 32, new_tokens: int = 128,
                          repeats: int = 3, device: str = "cpu", seed: int = 0,
                          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Per-token time of the chain with a ``json_schema`` processor first (``schema``, default
    BENCH_SCHEMA) against the same chain unconstrained, interleaved in one process; the ratio is
    the median of each repeat's pair (also of CPU time, ``cpu_ratio``: steadier on a busy
    machine, exact with one torch thread). Both runs decode text (the constraint needs the tokenizer)
    and never stop early on end-of-text; ``complete_rows`` counts constrained rows that finished
    before ``new_tokens`` (their steps are then fewer: ms/token divides by the steps run)."""
    from samplekit import engine
    from samplekit.plugins import get_registry

    if repeats < 1 or new_tokens < 1 or prompt_tokens < 1 or not batch_sizes:
        raise ValueError("repeats, new_tokens, prompt_tokens must be >= 1 and batch_sizes non-empty")
    registry = get_registry()
    if "json_schema" not in registry.names():
        raise ValueError("the constrained run needs the json_schema processor: pip install samplekit-grammar")
    say = progress or (lambda message: None)
    dev = torch.device(device)
    net, name = load_bench_model(model, dev, seed)
    tokenizer = tokenizer if tokenizer is not None else bench_tokenizer(model)
    chain = engine.resolve_chain(config)
    constraint = registry.create("json_schema", {"schema": BENCH_SCHEMA if schema is None else schema})
    constrained = Chain([constraint, *chain.processors], checked=chain.checked, source=chain.source)
    engine._prepare(net)
    vocab = net.config.vocab_size
    report: dict[str, Any] = {
        "model": name, "tokenizer": getattr(tokenizer, "name", type(tokenizer).__name__),
        "chain": [str(p) for p in chain.processors], "schema": "default" if schema is None else "given",
        "device": str(dev), "threads": torch.get_num_threads(), "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens, "repeats": repeats, "batches": [],
    }
    gen = torch.Generator().manual_seed(seed)
    for B in batch_sizes:
        prompts = torch.randint(0, min(vocab, getattr(tokenizer, "n_vocab", vocab)) - 1, (B, prompt_tokens),
                                generator=gen).to(dev)
        seeds = [seed + i for i in range(B)]
        steps: dict[str, int] = {}

        def decode(key: str, with_chain: Chain):
            results = engine.generate(net, prompts, chain=with_chain, max_new_tokens=new_tokens, seed=seeds,
                                      tokenizer=tokenizer, stop_on_eos=False)
            steps[key] = max(len(r.tokens) for r in results)
            return results

        variants = {"unconstrained": lambda: decode("unconstrained", chain),
                    "constrained": lambda: decode("constrained", constrained)}
        say(f"batch {B}: warm-up")
        complete = sum(r.finish_reason == "constraint" for r in variants["constrained"]())
        variants["unconstrained"]()
        times: dict[str, list[float]] = {k: [] for k in variants}
        per_token: dict[str, list[float]] = {k: [] for k in variants}
        cpu_per_token: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(repeats):
            say(f"batch {B}: repeat {r + 1}/{repeats}")
            for key, fn in variants.items():
                cpu = time.process_time()
                t = _timed(fn, dev)
                times[key].append(t)
                per_token[key].append(t / max(steps[key], 1))
                cpu_per_token[key].append((time.process_time() - cpu) / max(steps[key], 1))
        row: dict[str, Any] = {"batch_size": B, "complete_rows": complete}
        for key in variants:
            row[key] = {"ms_per_token": 1000 * statistics.median(per_token[key]),
                        "cpu_ms_per_token": 1000 * statistics.median(cpu_per_token[key]),
                        "steps": steps[key], "all_seconds": times[key]}
        row["ratio"] = _paired(per_token["constrained"], per_token["unconstrained"])
        # CPU time of the whole process (every thread): steadier than wall time on a shared machine
        row["cpu_ratio"] = _paired(cpu_per_token["constrained"], cpu_per_token["unconstrained"])
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
