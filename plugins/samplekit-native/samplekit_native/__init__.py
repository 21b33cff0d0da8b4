"""A C kernel for samplekit's chains that sample among top-k candidates, as a step strategy.

It serves a chain it recognises by the promises its processors declare, never by their classes
(so a plugin's processors with the same promises run on it too; samplekit.processor lists the
promises and the conformance kit checks them): any processors that do not commute with a top-k
(penalties: run as tensors on the whole vocabulary, as samplekit's top-k strategy runs them),
at most one processor promising ``divides_logits_by() -> T`` (T > 0), then one promising
``keeps_top(vocab_size)`` (a top-k), then any processors that run on candidates, then a selector
promising ``samples_by_inverse_cdf``. That covers the balanced chain (temperature -> top_k ->
multinomial) and llama.cpp's default (top_k -> top_p -> min_p -> temperature -> multinomial).
Each row may keep its own k (a server's clients): the kernel finds each row's own candidates.

A chain without a top-k whose first filter promises ``nucleus_p`` (top-p), followed only by
processors the kernel runs, is served by ``NativeNucleus`` below a vocabulary of
``NUCLEUS_VOCAB``: the kernel finds each row's nucleus over the whole row without sorting it
(``samplekit_nucleus`` in chain_sample.c), and a row whose decision lies within
``NUCLEUS_MARGIN`` of its cut takes its threshold from top-p's definition in tensor operations
(``nucleus_threshold``), so the kept tokens are the dense top-p's.

``chain_sample.c`` finds each row's k candidates in one pass over the scores (the full-vocabulary
``topk`` of samplekit's top-k candidate strategy, ``samplekit.strategies.top_k``, and the work that
costs most). When every processor after the top-k promises ``divides_logits_by``, ``nucleus_p``
(top-p) or ``min_p_ratio`` (min-p), the kernel also runs them and draws the token (three C calls a
step, like llama.cpp's sampler chain); otherwise those processors run as tensor operations on the
kernel's candidates and the selector picks among them. Rows carrying their own values (a per-row
k, temperature, p or min-p) run on the kernel too, each row with its own; steps on other devices
or dtypes go to the built-in tensor strategy it wraps.

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
import operator
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy
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
NUCLEUS_VOCAB = 16384  # from this vocabulary on, top-p's own vectorised filter_candidates beats the C pass
NUCLEUS_MARGIN = 1e-5  # a running sum this close to its cut: the float32 dense top-p could go either way
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
    lib.samplekit_candidates.argtypes = [p, i64, i64, i64, p, i64, p, p, p, p, p, p]
    lib.samplekit_candidates.restype = i64
    lib.samplekit_filter.argtypes = [p, i64, i64, p, i64, p, p, p]
    lib.samplekit_filter.restype = i64
    lib.samplekit_draw.argtypes = [p, p, i64, i64, p, p, i64, p, p]
    lib.samplekit_draw.restype = None
    lib.samplekit_nucleus.argtypes = [p, i64, i64, i64, p, p, ctypes.c_double, i64, p, p, p, p, p, p]
    lib.samplekit_nucleus.restype = i64
    return lib


# What the kernel runs after the top-k (chain_sample.c): each promise, its op code, and how a
# row's promised value becomes the op's float32 parameter (the tensor path's own arithmetic).
OPS = {
    "divides_logits_by": (0, lambda t: t),
    "nucleus_p": (1, lambda p: 1.0 - p),  # compared with each running sum: <= 1 - p is removed
    "min_p_ratio": (2, lambda p: math.log(p) if p > 0 else float("-inf")),  # max + log(p)
}


class Kernel:
    """One run's calls into the kernel, with reusable buffers (and their addresses). Each row
    has its own k (``ks``, at most the buffers' width ``k``): a row's candidates are the first
    ``ks[r]`` of its ``k`` places, the rest -inf."""

    def __init__(self, lib: ctypes.CDLL, ops: list[int] | None):
        self.lib, self.kinds = lib, ops
        self.ops = 0 if ops is None else len(ops)
        self.kinds_buffer = torch.tensor(ops or [0], dtype=torch.int32)
        self.size = (0, 0, 0)
        self.ks_at = 0

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

    def candidates(self, scores: torch.Tensor, k: int, temperatures: torch.Tensor,
                   ks: torch.Tensor | None = None) -> int:
        """Each row's ``ks[r]`` candidates of ``scores`` (float32, CPU, rows contiguous), divided
        by its temperature (``[B]`` float32), into ``values``/``ids`` ``[B, k]`` in token-id order
        (``ks`` ``[B]`` int64, each at most ``k``, the places past a row's own k -inf; None: k
        for every row).
        Returns -1 when every row is ready, else ``2 * row`` for a tie at the row's k-th place or
        ``2 * row + 1`` for a row that cannot be sampled (all -inf, NaN, +inf)."""
        rows, vocab = scores.shape
        if self.size != (rows, k, vocab):
            self._buffers(rows, k, vocab)
        if ks is None:
            ks = torch.full((rows,), k, dtype=torch.long)
        self.ks, self.ks_at = ks, ks.data_ptr()  # kept alive for filter and draw
        return self.lib.samplekit_candidates(scores.data_ptr(), rows, vocab, scores.stride(0), self.ks_at, k,
                                             temperatures.data_ptr(), self.values_at, self.ids_at, self.top_n,
                                             self.work, self.block_max)

    def nucleus(self, scores: torch.Tensor, temperatures: torch.Tensor, cuts: torch.Tensor) -> int:
        """Each row's top-p nucleus of ``scores / temperature`` (``cuts``: each row's 1 - p,
        float64) over the whole row, without sorting it (chain_sample.c), into ``values``/``ids``
        in token-id order, each row's count into ``ks``. Returns -1 when every row is ready, or
        ``2 * row + 1`` for a row that cannot be sampled. A row whose decision lies within
        ``NUCLEUS_MARGIN`` of its cut gets its threshold from ``nucleus_threshold`` (the
        definition's tensor operations, as the dense top-p computes them)."""
        rows, vocab = scores.shape
        if self.size != (rows, vocab, vocab):  # room for a row's every token
            self._buffers(rows, vocab, vocab)
            self.ks = torch.zeros(rows, dtype=torch.long)
            self.ks_at = self.ks.data_ptr()
        given = torch.full((rows,), float("nan"))
        for _ in range(2):
            status = self.lib.samplekit_nucleus(scores.data_ptr(), rows, vocab, scores.stride(0),
                                                temperatures.data_ptr(), cuts.data_ptr(), NUCLEUS_MARGIN, vocab,
                                                self.values_at, self.ids_at, self.ks_at, given.data_ptr(), self.work,
                                                self.block_max)
            if status != -2:
                return status
            undecided = self.ks < 0
            given.fill_(float("inf"))
            for r in undecided.nonzero().view(-1).tolist():
                given[r] = nucleus_threshold(scores[r] / temperatures[r], float(cuts[r]))
        raise AssertionError("samplekit-native: a nucleus undecided with its threshold given")  # pragma: no cover

    def filter(self, params: torch.Tensor) -> int:
        """The ops after the top-k on ``values`` in place (``params`` ``[ops, B]`` float32): -1, or
        ``2 * row + 1`` for a row whose maximum is no longer finite."""
        rows, k, _ = self.size
        return self.lib.samplekit_filter(self.values_at, rows, k, self.ks_at, self.ops,
                                         self.kinds_buffer.data_ptr(), params.data_ptr(), self.cdf)

    def draw(self, uniforms: torch.Tensor) -> torch.Tensor:
        """The tokens ``[B]`` drawn with ``uniforms`` ``[B, 1]`` (float32, CPU) from ``values``."""
        rows, k, _ = self.size
        out = torch.empty(rows, dtype=torch.long)
        self.lib.samplekit_draw(self.values_at, self.ids_at, rows, k, self.ks_at, uniforms.data_ptr(),
                                uniforms.stride(0), out.data_ptr(), self.cdf)
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
        self._fixed: dict[tuple, tuple | None] = {}  # (rows, vocab) -> inputs, when no row has its own values
        self._last: tuple | None = None  # (the rows' processors, vocab, inputs) last used, when rows have their own

    def select(self, run, input_ids, scores):
        if not _servable(scores):
            return self.tensors.select(run, input_ids, scores)
        found = self._inputs(run, scores.shape[-1])
        if found is None:  # a row keeping all, or a row's value the kernel does not take (T = 0)
            return self.tensors.select(run, input_ids, scores)
        tensors = self.tensors
        if tensors.dense:  # processors that do not commute with the top-k (penalties): tensors, whole rows
            scores = run.apply(tensors.dense, input_ids, scores)
            if not _servable(scores):
                return self._finish_dense(run, input_ids, scores)
        k, ks, temperatures, params = found
        kernel = self.kernel
        status = kernel.candidates(scores, k, temperatures, ks)
        if status >= 0:
            if status % 2:  # a row that cannot be sampled: name every such row, as the tensor path does
                check_rows(scores.amax(dim=-1))
            # a tie at a row's k-th place (or +inf after the temperature): the dense path
            return self._finish_dense(run, input_ids, scores) if tensors.dense else None
        if self.ops is None:  # processors the kernel does not run: tensors on its candidates
            return select_among(run, input_ids, kernel.values.clone(), kernel.ids.clone(), tensors.suffix,
                                checked=True)
        if self.ops and kernel.filter(params) >= 0:  # a maximum no longer finite: as without the kernel
            if tensors.dense:
                return self._finish_dense(run, input_ids, scores)
            return tensors.select(run, input_ids, scores)
        return kernel.draw(run.ctx.random.uniform(1))

    def _finish_dense(self, run, input_ids, scores):
        """The step densely from the processors after those that do not commute with the top-k
        (which have run on ``scores``), as the tensor path finishes it."""
        t = self.tensors
        scores = run.apply([*t.prefix, (t.producer, t.index), *t.suffix], input_ids, scores)
        return run.chain.selector.select(input_ids, scores, run.selector_context())

    def _inputs(self, run, vocab: int) -> tuple | None:
        """The kernel's inputs for the rows now in the run (``_compute``), computed again only
        when the rows' processors change (processors are values: the same objects, the same
        inputs)."""
        ctx = run.ctx
        if not run.varies:
            key = (ctx.batch_size, vocab)
            if key not in self._fixed:
                rows = ctx.batch_size
                dividers = [self.divider] * rows if self.divider is not None else None
                self._fixed[key] = self._compute([self.tensors.producer] * rows, ctx, vocab, dividers)
            return self._fixed[key]
        rows = [self.tensors.producer.row_processors(ctx)]
        if self.divider is not None:
            rows.append(self.divider.row_processors(ctx))
        rows += [p.row_processors(ctx) for p, _ in self.ops or ()]
        last = self._last
        if last is not None and last[1] == vocab and _same(last[0], rows):
            return last[2]
        found = self._compute(rows[0], ctx, vocab, rows[1] if self.divider is not None else None)
        self._last = (rows, vocab, found)  # holds the processors, so their ids are not reused
        return found

    def _compute(self, producers: list, ctx, vocab: int, dividers: list | None) -> tuple | None:
        """(the largest k, each row's k ``[B]`` int64, each row's temperature ``[B]`` float32,
        each op's parameter for each row ``[ops, B]`` float32), each from the row's own
        processor; None when a row keeps every token, a row's promise declines (T = 0), or rows
        differ in k and the kernel's candidates go on to tensor operations (whose candidates past
        a row's own k would not be the tensor path's)."""
        rows = ctx.batch_size
        ks = [p.keeps_top(vocab) for p in producers]  # each promises keeps_top: the chain's producer's class
        if any(k is None or k + 1 > vocab for k in ks) or (self.ops is None and len(set(ks)) > 1):
            return None
        temperatures = [1.0] * rows if dividers is None else [p.divides_logits_by() for p in dividers]
        params = []
        for p, name in self.ops or ():
            derive = OPS[name][1]
            row = [getattr(own, name)() for own in p.row_processors(ctx)]
            if any(v is None for v in row):
                return None
            params.append([derive(v) for v in row])
        if any(t is None or not ctypes.c_float(t).value > 0 for t in temperatures):
            return None
        return (max(ks), torch.tensor(ks, dtype=torch.long), torch.tensor(temperatures, dtype=torch.float32),
                torch.tensor(params or [[0.0] * rows], dtype=torch.float32).contiguous())


def _same(a: list[list], b: list[list]) -> bool:
    """The same processor objects, place by place."""
    return len(a) == len(b) and all(len(x) == len(y) and all(map(operator.is_, x, y)) for x, y in zip(a, b))


def nucleus_threshold(row: torch.Tensor, cut: float) -> float:
    """The least probable value top-p keeps in ``row`` ``[V]`` float32 (``cut``: 1 - p), by its
    definition (``nucleus_p``; Hugging Face's TopPLogitsWarper) in the tensor operations the
    dense top-p runs: sort ascending, softmax, running sum, remove the values whose running sum is
    <= 1 - p (compared in float32), keep at least one."""
    ascending = torch.from_numpy(numpy.sort(row.contiguous().numpy()))  # torch's sort's values, sooner
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    removed = min(int((cumulative <= torch.tensor(cut, dtype=row.dtype)).sum()), row.shape[-1] - 1)
    return float(ascending[removed])


class NativeNucleus(StepStrategy):
    """A chain without a top-k whose first filter is top-p: the processors before it that do not
    divide by T run as tensors on the whole vocabulary (penalties), then the kernel divides by
    each row's temperature, finds each row's nucleus without sorting the row, runs the processors
    after it (``ops``) and draws. A step it cannot serve runs densely (the same tokens)."""

    name = "top-p nucleus (C kernel)"
    per_row_values = True  # each row's own temperature, p and min-p are read from its processors

    def __init__(self, lib: ctypes.CDLL, dense: list, divider: tuple | None, nucleus: tuple, ops: list):
        self.dense, self.divider, self.nucleus, self.ops = dense, divider, nucleus, ops  # (processor, index)
        self.kernel = Kernel(lib, [OPS[name][0] for _, _, name in ops])
        self._fixed: dict[int, tuple | None] = {}  # rows -> inputs, when no row has its own values
        self._last: tuple | None = None  # (the rows' processors, inputs) last used

    def select(self, run, input_ids, scores):
        if not _servable(scores):
            return None
        if scores.shape[-1] >= NUCLEUS_VOCAB:
            return self._filter_found(run, input_ids, scores)
        found = self._inputs(run)
        if found is None:
            return None  # a row's value the kernel does not take (T = 0, p = 1)
        if self.dense:
            scores = run.apply(self.dense, input_ids, scores)
            if not _servable(scores):
                return self._finish_dense(run, input_ids, scores)
        temperatures, cuts, params = found
        kernel = self.kernel
        status = kernel.nucleus(scores, temperatures, cuts)
        if status >= 0:  # a row that cannot be sampled: name every such row, as the dense path does
            check_rows(scores.amax(dim=-1))
            return self._finish_dense(run, input_ids, scores) if self.dense else None
        if self.ops and kernel.filter(params) >= 0:  # a maximum no longer finite
            return self._finish_dense(run, input_ids, scores) if self.dense else None
        return kernel.draw(run.ctx.random.uniform(1))

    def _filter_found(self, run, input_ids, scores):
        """A large vocabulary: top-p's own ``filter_candidates`` (samplekit's filter-found
        candidates strategy, with public names), densely when it declines."""
        scores = run.apply([*self.dense, *([self.divider] if self.divider else [])], input_ids, scores)
        nucleus, index = self.nucleus
        run.ctx.state = run.states[index]
        found = nucleus.filter_candidates(input_ids, scores, run.ctx)
        if found is None:
            return self._finish_dense(run, input_ids, scores, divided=True)
        values, indices = found
        indices, order = indices.sort(dim=-1)
        return select_among(run, input_ids, values.gather(-1, order), indices, [(p, i) for p, i, _ in self.ops],
                            checked=False)

    def _finish_dense(self, run, input_ids, scores, divided: bool = False):
        """The step densely from the processors after ``dense`` (which have run on ``scores``;
        ``divided``: the divider too)."""
        rest = [*([self.divider] if self.divider and not divided else []), self.nucleus,
                *[(p, i) for p, i, _ in self.ops]]
        scores = run.apply(rest, input_ids, scores)
        return run.chain.selector.select(input_ids, scores, run.selector_context())

    def _inputs(self, run) -> tuple | None:
        """(each row's temperature ``[B]`` float32, 1 - p ``[B]`` float64, each op's parameter
        ``[ops, B]`` float32), computed again only when the rows' processors change; None when a
        row's promise declines or its p is 1 (top-p keeps every token)."""
        ctx = run.ctx
        places = [*([self.divider[0]] if self.divider else []), self.nucleus[0], *[p for p, _, _ in self.ops]]
        if not run.varies:
            if ctx.batch_size not in self._fixed:
                self._fixed[ctx.batch_size] = self._compute([[p] * ctx.batch_size for p in places], ctx.batch_size)
            return self._fixed[ctx.batch_size]
        rows = [p.row_processors(ctx) for p in places]
        last = self._last
        if last is not None and _same(last[0], rows):
            return last[1]
        found = self._compute(rows, ctx.batch_size)
        self._last = (rows, found)  # holds the processors, so their ids are not reused
        return found

    def _compute(self, rows: list[list], batch: int) -> tuple | None:
        """``_inputs`` from each place's row processors (the divider's, if any, the nucleus's, each op's)."""
        if self.divider:
            temperatures, rows = [p.divides_logits_by() for p in rows[0]], rows[1:]
        else:
            temperatures = [1.0] * batch
        ps = [p.nucleus_p() for p in rows[0]]
        if any(t is None or not ctypes.c_float(t).value > 0 for t in temperatures) or \
                any(p is None or not 0.0 < p < 1.0 for p in ps):
            return None
        params = []
        for (_, _, name), own in zip(self.ops, rows[1:]):
            values = [getattr(p, name)() for p in own]
            if any(v is None for v in values):
                return None
            params.append([OPS[name][1](v) for v in values])
        return (torch.tensor(temperatures, dtype=torch.float32),
                torch.tensor([1.0 - p for p in ps], dtype=torch.float64),
                torch.tensor(params or [[0.0] * batch], dtype=torch.float32).contiguous())


def recognise_nucleus(chain) -> tuple | None:
    """(dense, divider or None, nucleus, ops) when ``chain`` has no top-k and its first processor
    promising ``nucleus_p`` is followed only by processors the kernel runs, before an inverse-CDF
    sampler: ``dense`` the processors before it (tensors), ``divider`` the last of those when it
    promises ``divides_logits_by`` T > 0 (the kernel divides); else None."""
    if chain.selector is None or not promised(chain.selector, "samples_by_inverse_cdf", "select"):
        return None
    logits = chain.indexed_logits
    if any(promised(p, "keeps_top") is not None for p, _ in logits):
        return None  # a top-k: the candidate strategies
    at = next((a for a, (p, _) in enumerate(logits)
               if promised(p, "nucleus_p") is not None and p.nucleus_p() is not None), None)
    if at is None or promised(logits[at][0], "filter_candidates") is None:
        return None
    ops = []
    for p, i in logits[at + 1:]:
        name = next((n for n in OPS if promised(p, n) is not None and getattr(p, n)() is not None), None)
        if name is None:
            return None
        ops.append((p, i, name))
    dense, divider = list(logits[:at]), None
    if dense:
        divides = promised(dense[-1][0], "divides_logits_by")
        t = divides() if divides is not None else None
        if t is not None and ctypes.c_float(t).value > 0:
            divider = dense.pop()
    return dense, divider, logits[at], ops


def _servable(scores: torch.Tensor) -> bool:
    """The kernel reads ``scores``: CPU float32 ``[B, V]``, each row contiguous."""
    return (scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.dim() == 2
            and scores.stride(-1) == 1)


def recognise(chain) -> tuple | None:
    """(the top-k plan, the dividing processor before the top-k or None, the ops after it or None
    when some processor there is not one the kernel runs) when ``chain`` is [at most one processor
    dividing by T > 0] -> a top-k -> processors that run on candidates -> an inverse-CDF sampler,
    each by its declared promise (module docstring); else None."""
    found = plan(chain)
    if found is None:
        return None
    dense, prefix, _, suffix, _ = found
    if len(prefix) > 1 or not promised(chain.selector, "samples_by_inverse_cdf", "select"):
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
        nucleus = recognise_nucleus(chain)
        lib = library() if nucleus is not None else None
        return NativeNucleus(lib, *nucleus) if lib is not None else None
    lib = library()
    if lib is None:
        return None
    steps, divider, ops = found
    return NativeCandidates(TopKCandidates(*steps), lib, divider, ops)
