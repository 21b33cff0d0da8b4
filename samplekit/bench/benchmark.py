"""What a benchmark is, for ``samplekit bench --workload NAME``: the built-in workloads and those
plugins register through the ``register_benchmarks`` hook (samplekit.hookspecs) alike."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BenchSettings", "Benchmark"]

_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass
class BenchSettings:
    """What the command line asks of a benchmark run.

    ``model``: a shape name ("tiny", "gpt2-small": random weights), "demo", a checkpoint path or
    a model object; ``config``: the chain (a preset, a config file, a Chain; None: the default);
    ``options``: the ``--option KEY=VALUE`` pairs (only keys the benchmark declares);
    ``compare``: the ``--compare`` names (only those the benchmark declares);
    ``progress``: a callback for progress lines (no-op by default)."""

    model: Any = "demo"
    config: Any = None
    batch_sizes: tuple[int, ...] = (1, 8)
    prompt_tokens: int = 32
    new_tokens: int = 128
    repeats: int = 3
    requests: int = 256
    device: str = "cpu"
    seed: int = 0
    options: dict[str, str] = field(default_factory=dict)
    compare: tuple[str, ...] = ()
    progress: Callable[[str], None] = lambda message: None

    def load_model(self) -> tuple[Any, str]:
        """The model (on ``device``, seeded random weights for a shape) and its name."""
        from samplekit.bench.models import load_bench_model

        return load_bench_model(self.model, self.device, self.seed)

    def tokenizer(self, required: bool = True):
        """The model's tokenizer (samplekit.bench.models.bench_tokenizer); for a model object
        without one: a ValueError when ``required``, else None."""
        import torch

        from samplekit.bench.models import bench_tokenizer

        if not required and isinstance(self.model, torch.nn.Module) and getattr(self.model, "tokenizer", None) is None:
            return None
        return bench_tokenizer(self.model)

    def chain(self):
        """The chain ``config`` names, resolved as ``samplekit.generate`` resolves it."""
        from samplekit.engine import resolve_chain

        return resolve_chain(self.config)


@dataclass(frozen=True)
class Benchmark:
    """A workload ``samplekit bench --workload NAME`` runs.

    ``run(settings) -> report``: measures and returns a JSON-able dict (a ValueError is a usage
    error, printed as such); ``show(report, console=None)``: prints the report with rich.
    ``options``: the ``--option`` keys it takes, each with a one-line help. ``batch_sizes``: its
    default ``--batch-size`` values; ``one_batch_size``: it takes exactly one. ``compares``: the
    ``--compare`` names it takes, each with a one-line help (none: it runs alone)."""

    name: str
    summary: str
    run: Callable[[BenchSettings], dict[str, Any]]
    show: Callable[[dict[str, Any], Any], None]
    options: Mapping[str, str] = field(default_factory=dict)
    batch_sizes: tuple[int, ...] = (1, 8)
    one_batch_size: bool = False
    compares: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"benchmark name {self.name!r}: use lowercase letters, digits and '-'")
        if not callable(self.run) or not callable(self.show):
            raise ValueError(f"benchmark {self.name!r}: run and show must be callables")
