"""The benchmarks, together: ``samplekit bench`` and the workloads plugins add to it.

- ``overhead``: the engine against its bare cached loop, a plain loop without a cache and (``--compare
  hf``) transformers' ``generate`` with the chain's equivalent settings (``hf_settings``);
- ``workloads``: the built-in ``--workload`` benchmarks (ragged, open-ended; samplekit.throughput);
- ``benchmark``: ``Benchmark`` and ``BenchSettings``, what a plugin registers through the
  ``register_benchmarks`` hook for ``bench --workload NAME`` (samplekit-grammar's "constrained");
- ``models``, ``loops``, ``timing``, ``hf``: the shapes, reference loops, paired timings and
  peak memory they share.

A benchmark measures; it is never a test (no test asserts a speed).
"""

from __future__ import annotations

from samplekit.bench.benchmark import BenchSettings, Benchmark
from samplekit.bench.hf import bench_chain_vs_hf, hf_bare_loop, hf_generate
from samplekit.bench.hf_settings import HFSettings, hf_settings
from samplekit.bench.loops import bare_cached_loop, chain_alone, chain_top_k, naive_loop
from samplekit.bench.models import SHAPES, bench_tokenizer, load_bench_model, prepare
from samplekit.bench.overhead import print_report, run_bench
from samplekit.bench.timing import PeakMemory, paired, timed

__all__ = ["SHAPES", "BenchSettings", "Benchmark", "HFSettings", "PeakMemory", "bare_cached_loop",
           "bench_chain_vs_hf", "bench_tokenizer", "chain_alone", "chain_top_k", "hf_bare_loop", "hf_generate",
           "hf_settings", "load_bench_model", "naive_loop", "paired", "prepare", "print_report", "run_bench", "timed"]
