"""A C kernel for the most common chain, temperature -> top_k -> multinomial, as a step strategy.

Between two forward passes of a small model, the chain's dozen small tensor operations cost more
than the model's own argmax (samplekit's README, "Speed"). ``top_k_sample.c`` does the work of
samplekit's top-k candidate strategy (``samplekit.strategies.top_k``) row by row in two calls. This
plugin offers it through samplekit's ``step_strategy`` hook, before the built-in strategies, for
exactly that chain on CPU float32 scores; any other step goes to the built-in tensor strategy.

It is compiled with the system C compiler (``$CC``, else ``cc``) the first time it is needed,
into ``$SAMPLEKIT_CACHE_DIR`` (default ``~/.cache/samplekit``), and loaded with ctypes. When it
cannot be built, one warning says why and samplekit keeps to tensor operations;
``SAMPLEKIT_NATIVE=0`` turns it off quietly.

It is compiled without floating-point contraction or fast-math (``FLAGS``), so each operation
rounds as written, and its arithmetic is the tensor path's: the temperature divides in float32,
the running sum accumulates in double and rounds to float32 at each step (as ``torch.cumsum``
does on the CPU), and the draw is the first candidate whose running sum exceeds ``u * total``.
Only the exponential differs: C's ``expf`` and torch's vectorised exp disagree in the last bit
for about 1% of inputs, which changes a draw only when the uniform falls within that of a step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from samplekit import hookimpl
from samplekit.env import env_flag
from samplekit.selection import check_rows
from samplekit.strategies.top_k import TopKCandidates, plan
from samplekit.strategy import StepStrategy

__version__ = "0.1.0"

SOURCE = Path(__file__).with_name("top_k_sample.c")
FLAGS = ("-O3", "-ffp-contract=off", "-shared", "-fPIC")
ENABLE_ENV = "SAMPLEKIT_NATIVE"
_CANDIDATE_BYTES = 16  # struct {float value; int64_t id;}: 4 + 4 padding + 8
_UNLOADED = object()
_library = _UNLOADED


class NativeBuildWarning(UserWarning):
    """The C kernel could not be built; samplekit samples with tensor operations."""


def cache_dir() -> Path:
    configured = os.environ.get("SAMPLEKIT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "samplekit"


def enabled() -> bool:
    return env_flag(ENABLE_ENV, default=True)


def build(directory: Path | None = None) -> Path:
    """Compile the kernel (once per source, flags, interpreter and platform); return its path.
    Raises OSError or subprocess.CalledProcessError when it cannot be built."""
    code = SOURCE.read_bytes()
    described = " ".join((*FLAGS, sys.version, platform.platform())).encode()
    tag = hashlib.sha256(code + described).hexdigest()[:16]
    directory = directory or cache_dir()
    library = directory / f"top_k_sample-{tag}.so"
    if library.is_file():
        return library
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OSError("no C compiler found (set CC, or install gcc)")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        built = Path(scratch) / library.name
        subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE), "-lm"], check=True,
                       capture_output=True, timeout=120)
        os.replace(built, library)  # atomic: a concurrent build or reader never sees half a file
    return library


def library() -> ctypes.CDLL | None:
    """The loaded kernel, built on first use; None when disabled or it cannot be built (said
    once, with the reason)."""
    global _library
    if _library is _UNLOADED:
        _library = None
        if enabled():
            try:
                _library = _bind(ctypes.CDLL(str(build())))
            except (OSError, subprocess.SubprocessError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                reason = f"{exc} {detail.decode(errors='replace')[:300]}".strip()
                warnings.warn(f"samplekit-native: the C kernel could not be built ({reason}); sampling uses "
                              f"tensor operations (same tokens; set {ENABLE_ENV}=0 to silence this)",
                              NativeBuildWarning, stacklevel=2)
    return _library


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.samplekit_top_k.argtypes = [p, i64, i64, i64, i64, f32, p, p, p, p]
    lib.samplekit_top_k.restype = i64
    lib.samplekit_sample.argtypes = [p, p, i64, i64, f32, p, i64, p, p]
    lib.samplekit_sample.restype = None
    return lib


class TopKSampler:
    """Reusable buffers (and their addresses) for one run's calls into the kernel."""

    def __init__(self, lib: ctypes.CDLL, temperature: float):
        self.top_k, self.sample = lib.samplekit_top_k, lib.samplekit_sample
        self.temperature = temperature
        self.size = (0, 0, 0)

    def _buffers(self, rows: int, k: int, vocab: int) -> None:
        self.buffers = [torch.empty(rows * (k + 1) * _CANDIDATE_BYTES, dtype=torch.uint8),  # candidates
                        torch.empty(rows, dtype=torch.float32),  # each row's maximum / T
                        torch.empty(vocab * _CANDIDATE_BYTES, dtype=torch.uint8),  # selection work
                        torch.empty(vocab, dtype=torch.float32),  # block maxima
                        torch.empty(k, dtype=torch.float32)]  # a row's running sums
        self.candidates, self.top, self.work, self.block_max, self.cdf = (b.data_ptr() for b in self.buffers)
        self.size = (rows, k, vocab)

    def select(self, scores: torch.Tensor, k: int) -> int:
        """Find each row's candidates in ``scores`` (float32, CPU, rows contiguous). Returns -1
        when every row is ready for ``draw``, else ``2 * row`` for a tie at the k-th place or
        ``2 * row + 1`` for a row that cannot be sampled (all -inf, NaN, +inf)."""
        rows, vocab = scores.shape
        if self.size != (rows, k, vocab):
            self._buffers(rows, k, vocab)
        return self.top_k(scores.data_ptr(), rows, vocab, scores.stride(0), k, self.temperature,
                          self.candidates, self.top, self.work, self.block_max)

    def draw(self, k: int, uniforms: torch.Tensor) -> torch.Tensor:
        """The tokens ``[B]`` drawn with ``uniforms`` ``[B, 1]`` (float32, CPU) after ``select``."""
        out = torch.empty(self.size[0], dtype=torch.long)
        self.sample(self.candidates, self.top, self.size[0], k, self.temperature, uniforms.data_ptr(),
                    uniforms.stride(0), out.data_ptr(), self.cdf)
        return out


class NativeTopK(StepStrategy):
    """temperature (T > 0, at most one) -> top_k -> multinomial in the C kernel; steps on other
    devices or dtypes go to the tensor strategy it wraps."""

    name = "top-k candidates (C kernel)"

    def __init__(self, tensors: TopKCandidates, sampler: TopKSampler):
        self.tensors, self.sampler = tensors, sampler

    def select(self, run, input_ids, scores):
        if scores.device.type != "cpu" or scores.dtype != torch.float32 or scores.stride(-1) != 1:
            return self.tensors.select(run, input_ids, scores)
        k = self.tensors.producer.keeps_top(scores.shape[-1])
        if k is None or k + 1 > scores.shape[-1]:
            return None
        found = self.sampler.select(scores, k)
        if found >= 0:
            if found % 2:  # a row that cannot be sampled: name every such row, as the tensor path does
                check_rows(scores.amax(dim=-1))
            return None  # a tie at the k-th place (or +inf after the temperature): the dense path
        return self.sampler.draw(k, run.ctx.random.uniform(1))


def temperature_of(chain) -> float | None:
    """T when ``chain`` is exactly [temperature T > 0 in float32] -> top_k -> multinomial, else None."""
    from samplekit.processors.selectors import Multinomial
    from samplekit.processors.temperature import Temperature
    from samplekit.processors.top_k import TopK

    found = plan(chain)
    if found is None:
        return None
    dense, prefix, producer, suffix, _ = found
    if dense or type(producer) is not TopK or suffix or type(chain.selector) is not Multinomial or len(prefix) > 1:
        return None
    if not prefix:
        return 1.0
    p = prefix[0][0]
    if type(p) is not Temperature or not ctypes.c_float(p.value).value > 0:  # > 0 in float32 too
        return None
    return p.value


@hookimpl(tryfirst=True)
def step_strategy(chain):
    temperature = temperature_of(chain)
    if temperature is None:
        return None
    lib = library()
    if lib is None:
        return None
    return NativeTopK(TopKCandidates(*plan(chain)), TopKSampler(lib, temperature))
