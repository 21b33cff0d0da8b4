"""An optional C kernel for the most common chain: temperature -> top_k -> multinomial.

Between two forward passes of a small model, the chain's dozen small tensor operations cost more
than the model's own argmax by a wide margin (README, "Speed"). ``top_k_sample.c`` does the same
work row by row in two calls. It is compiled with the system C compiler (``$CC``, else ``cc``) the
first time it is needed, into ``$SAMPLEKIT_CACHE_DIR`` (default ``~/.cache/samplekit``), and
loaded with ctypes. Without a compiler, or with ``SAMPLEKIT_NATIVE=0``, samplekit keeps to the
tensor operations.

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
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("top_k_sample.c")
FLAGS = ("-O3", "-ffp-contract=off", "-shared", "-fPIC")
_CANDIDATE_BYTES = 16  # struct {float value; int64_t id;}: 4 + 4 padding + 8
_UNLOADED = object()
_library = _UNLOADED


def cache_dir() -> Path:
    configured = os.environ.get("SAMPLEKIT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "samplekit"


def enabled() -> bool:
    return os.environ.get("SAMPLEKIT_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


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
    """The loaded kernel, built on first use; None when disabled or it cannot be built."""
    global _library
    if _library is _UNLOADED:
        _library = None
        if enabled():
            try:
                _library = _bind(ctypes.CDLL(str(build())))
            except (OSError, subprocess.SubprocessError):
                _library = None
    return _library


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.samplekit_top_k.argtypes = [p, i64, i64, i64, i64, f32, p, p, p, p]
    lib.samplekit_top_k.restype = i64
    lib.samplekit_sample.argtypes = [p, p, i64, i64, f32, p, i64, p, p]
    lib.samplekit_sample.restype = None
    return lib


class TopKSampler:
    """Reusable buffers (and their addresses) for one generation's calls into the kernel."""

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
        ``2 * row + 1`` for a row of only -inf (the first such row)."""
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
