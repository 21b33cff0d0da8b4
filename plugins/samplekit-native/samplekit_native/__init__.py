"""A C kernel for samplekit's chains that sample among top-k candidates, as a step strategy.

It serves a chain it recognises by the promises its processors declare, never by their classes
(so a plugin's processors with the same promises run on it too; samplekit.processor lists the
promises and the conformance kit checks them): at most one processor promising
``divides_logits_by() -> T`` (T > 0), then one promising ``keeps_top(vocab_size)`` (a top-k), then
any processors that run on candidates, then a selector promising ``samples_by_inverse_cdf``. That
covers the balanced chain (temperature -> top_k -> multinomial) and llama.cpp's default (top_k ->
top_p -> min_p -> temperature -> multinomial).

``chain_sample.c`` finds each row's k candidates in one pass over the scores (the full-vocabulary
``topk`` of samplekit's top-k candidate strategy, ``samplekit.strategies.top_k``, and the work that
costs most). When every processor after the top-k promises ``divides_logits_by``, ``nucleus_p``
(top-p) or ``min_p_ratio`` (min-p), the kernel also runs them and draws the token (three C calls a
step, like llama.cpp's sampler chain); otherwise those processors run as tensor operations on the
kernel's candidates and the selector picks among them. Rows carrying their own values (a per-row
temperature, p or min-p) run on the kernel too, each row with its own; rows with different k,
and steps on other devices or dtypes, go to the built-in tensor strategy it wraps.

It is compiled with the system C compiler (``$CC``, else ``cc``) the first time it is needed,
into ``$SAMPLEKIT_CACHE_DIR`` (default ``~/.cache/samplekit``), and loaded with ctypes. When it
cannot be built, one warning says why and samplekit keeps to tensor operations;
``SAMPLEKIT_NATIVE=0`` turns it off quietly.

It is compiled without floating-point contraction or fast-math (``FLAGS``), so each operation
rounds as written, and its arithmetic is the tensor path's: divisions in float32, running sums
accumulated in double and rounded to float32 at each step (as ``torch.cumsum`` does on the CPU),
the draw the first candidate whose running sum exceeds ``u * total``. Only the exponential (C's
``expf`` against torch's vectorised exp) and the order of top-p's softmax sum differ in the last
bit, which changes a token only when a uniform, or a top-p running sum, falls within that of a
decision (about once in 10^7 draws).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from samplekit import StepStrategy, check_rows, hookimpl
from samplekit.env import env_flag
from samplekit.strategies.candidates import select_among
from samplekit.strategies.top_k import TopKCandidates, plan
from samplekit.strategy import promised

__version__ = "0.1.0"

SOURCE = Path(__file__).with_name("chain_sample.c")
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
    library = directory / f"chain_sample-{tag}.so"
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
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.samplekit_candidates.argtypes = [p, i64, i64, i64, i64, p, p, p, p, p, p]
    lib.samplekit_candidates.restype = i64
    lib.samplekit_filter.argtypes = [p, i64, i64, i64, p, p, p]
    lib.samplekit_filter.restype = i64
    lib.samplekit_draw.argtypes = [p, p, i64, i64, p, i64, p, p]
    lib.samplekit_draw.restype = None
    return lib


# What the kernel runs after the top-k (chain_sample.c): each promise, its op code, and how a
# row's promised value becomes the op's float32 parameter (the tensor path's own arithmetic).
OPS = {
    "divides_logits_by": (0, lambda t: t),
    "nucleus_p": (1, lambda p: 1.0 - p),  # compared with each running sum: <= 1 - p is removed
    "min_p_ratio": (2, lambda p: math.log(p) if p > 0 else float("-inf")),  # max + log(p)
}


class Kernel:
    """One run's calls into the kernel, with reusable buffers (and their addresses)."""

    def __init__(self, lib: ctypes.CDLL, ops: list[int] | None):
        self.lib, self.kinds = lib, ops
        self.ops = 0 if ops is None else len(ops)
        self.kinds_buffer = torch.tensor(ops or [0], dtype=torch.int32)
        self.size = (0, 0, 0)

    def _buffers(self, rows: int, k: int, vocab: int) -> None:
        self.values = torch.empty(rows, k, dtype=torch.float32)
        self.ids = torch.empty(rows, k, dtype=torch.long)
        self.scratch = [torch.empty((k + 1) * _CANDIDATE_BYTES, dtype=torch.uint8),  # the k + 1 largest
                        torch.empty(vocab * _CANDIDATE_BYTES, dtype=torch.uint8),  # selection work
                        torch.empty(vocab, dtype=torch.float32),  # block maxima
                        torch.empty(k, dtype=torch.float32)]  # a row's sorted values / running sums
        self.top_n, self.work, self.block_max, self.cdf = (b.data_ptr() for b in self.scratch)
        self.values_at, self.ids_at = self.values.data_ptr(), self.ids.data_ptr()
        self.size = (rows, k, vocab)

    def candidates(self, scores: torch.Tensor, k: int, temperatures: torch.Tensor) -> int:
        """Each row's k candidates of ``scores`` (float32, CPU, rows contiguous), divided by its
        temperature (``[B]`` float32), into ``values``/``ids`` ``[B, k]`` in token-id order.
        Returns -1 when every row is ready, else ``2 * row`` for a tie at the k-th place or
        ``2 * row + 1`` for a row that cannot be sampled (all -inf, NaN, +inf)."""
        rows, vocab = scores.shape
        if self.size != (rows, k, vocab):
            self._buffers(rows, k, vocab)
        return self.lib.samplekit_candidates(scores.data_ptr(), rows, vocab, scores.stride(0), k,
                                             temperatures.data_ptr(), self.values_at, self.ids_at, self.top_n,
                                             self.work, self.block_max)

    def filter(self, params: torch.Tensor) -> int:
        """The ops after the top-k on ``values`` in place (``params`` ``[ops, B]`` float32): -1, or
        ``2 * row + 1`` for a row whose maximum is no longer finite."""
        rows, k, _ = self.size
        return self.lib.samplekit_filter(self.values_at, rows, k, self.ops, self.kinds_buffer.data_ptr(),
                                         params.data_ptr(), self.cdf)

    def draw(self, uniforms: torch.Tensor) -> torch.Tensor:
        """The tokens ``[B]`` drawn with ``uniforms`` ``[B, 1]`` (float32, CPU) from ``values``."""
        rows, k, _ = self.size
        out = torch.empty(rows, dtype=torch.long)
        self.lib.samplekit_draw(self.values_at, self.ids_at, rows, k, uniforms.data_ptr(), uniforms.stride(0),
                                out.data_ptr(), self.cdf)
        return out


class NativeCandidates(StepStrategy):
    """The top-k candidate strategy with the kernel finding the candidates, and (``ops``) running
    the processors after the top-k and the draw; steps it cannot serve go to the tensor strategy
    it wraps (``tensors``)."""

    name = "top-k candidates (C kernel)"
    per_row_values = True  # each row's own temperature, p and min-p are read from its processors

    def __init__(self, tensors: TopKCandidates, lib: ctypes.CDLL, divider, ops: list | None):
        self.tensors, self.divider, self.ops = tensors, divider, ops  # ops: [(processor, promise)]
        self.kernel = Kernel(lib, None if ops is None else [OPS[name][0] for _, name in ops])
        self.name = "top-k candidates (C kernel)" if ops is not None else "top-k candidates (C kernel, tensor suffix)"
        self._fixed: dict[int, tuple] = {}  # rows -> (temperatures, params) when no row has its own

    def select(self, run, input_ids, scores):
        if scores.device.type != "cpu" or scores.dtype != torch.float32 or scores.stride(-1) != 1 or scores.dim() != 2:
            return self.tensors.select(run, input_ids, scores)
        producer, ctx, vocab = self.tensors.producer, run.ctx, scores.shape[-1]
        if run.varies and not producer.shares_values(ctx):
            ks = {promised(p, "keeps_top")(vocab) for p in producer.row_processors(ctx)}
            k = ks.pop() if len(ks) == 1 else None
        else:
            k = producer.keeps_top(vocab)
        if k is None or k + 1 > vocab:
            return self.tensors.select(run, input_ids, scores)  # rows with their own k, or a row keeping all
        values = self._values(run) if run.varies else self._fixed.get(scores.shape[0]) or self._fix(run)
        if values is None:
            return self.tensors.select(run, input_ids, scores)  # a row's value the kernel does not take (T = 0)
        temperatures, params = values
        found = self.kernel.candidates(scores, k, temperatures)
        if found >= 0:
            if found % 2:  # a row that cannot be sampled: name every such row, as the tensor path does
                check_rows(scores.amax(dim=-1))
            return None  # a tie at the k-th place (or +inf after the temperature): the dense path
        kernel = self.kernel
        if self.ops is None:  # processors the kernel does not run: tensors on its candidates
            return select_among(run, input_ids, kernel.values.clone(), kernel.ids.clone(), self.tensors.suffix,
                                checked=True)
        if self.ops and kernel.filter(params) >= 0:
            return self.tensors.select(run, input_ids, scores)  # a maximum no longer finite: as without the kernel
        return kernel.draw(ctx.random.uniform(1))

    def _fix(self, run) -> tuple | None:
        found = self._values(run)
        if found is not None:
            self._fixed[run.ctx.batch_size] = found
        return found

    def _values(self, run) -> tuple | None:
        """(each row's temperature ``[B]``, each op's parameter for each row ``[ops, B]``), float32,
        each from the row's own processor; None when some row's promise declines (T = 0)."""
        ctx = run.ctx
        rows = ctx.batch_size
        if self.divider is None:
            temperatures = [1.0] * rows
        else:
            temperatures = [p.divides_logits_by() for p in self.divider.row_processors(ctx)]
        params = []
        for p, name in self.ops or ():
            derive = OPS[name][1]
            row = [getattr(own, name)() for own in p.row_processors(ctx)]
            if any(v is None for v in row):
                return None
            params.append([derive(v) for v in row])
        if any(t is None or not ctypes.c_float(t).value > 0 for t in temperatures):
            return None
        return (torch.tensor(temperatures, dtype=torch.float32),
                torch.tensor(params or [[0.0] * rows], dtype=torch.float32).contiguous())


def recognise(chain) -> tuple | None:
    """(the top-k plan, the dividing processor before the top-k or None, the ops after it or None
    when some processor there is not one the kernel runs) when ``chain`` is [at most one processor
    dividing by T > 0] -> a top-k -> processors that run on candidates -> an inverse-CDF sampler,
    each by its declared promise (module docstring); else None."""
    found = plan(chain)
    if found is None:
        return None
    dense, prefix, _, suffix, _ = found
    if dense or len(prefix) > 1 or not promised(chain.selector, "samples_by_inverse_cdf", "select"):
        return None
    divider = None
    if prefix:
        divider = prefix[0][0]
        divides = promised(divider, "divides_logits_by")
        t = divides() if divides is not None else None
        if t is None or not ctypes.c_float(t).value > 0:  # > 0 in float32 too
            return None
    ops = []
    for p, _ in suffix:
        name = next((n for n in OPS if promised(p, n) is not None and getattr(p, n)() is not None), None)
        if name is None:
            ops = None
            break
        ops.append((p, name))
    return found, divider, ops


@hookimpl(tryfirst=True)
def step_strategy(chain):
    found = recognise(chain)
    if found is None:
        return None
    lib = library()
    if lib is None:
        return None
    steps, divider, ops = found
    return NativeCandidates(TopKCandidates(*steps), lib, divider, ops)
