"""Token masks: llguidance fills one bit per token for each row, we turn them into a boolean mask.

``fill(matchers, width)`` asks llguidance for each row's allowed tokens (``int32 [B, W]``, bit
``t % 32`` of word ``t // 32`` set when token ``t`` is allowed), on the calling thread or, with
``parallel``, through one ``LLExecutor`` call that computes the rows on llguidance's own threads
(it releases the GIL); ``Pacer`` chooses, from what the rows have cost so far. (These are the
calls ``llguidance.torch`` makes; importing that module would import ``torch.compile``'s
machinery, seconds of start-up.) ``unpack(bitmask, vocab, device)`` gives
``bool [B, vocab]``: ids past the tokenizer's vocabulary (a padded model vocabulary) are never
allowed.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import llguidance
import torch

try:  # numpy's unpackbits is the fastest unpacking on the CPU; torch's bit operations otherwise
    import numpy
except ImportError:  # pragma: no cover - numpy comes with nearly every torch install
    numpy = None

_EXECUTOR: llguidance.LLExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()
_BITS = {}  # device -> int32 [32]: the value of each bit of a word


def threads() -> int:
    """llguidance's threads for a batch: every CPU this process may use (at most 32). Masks are
    computed between two forward passes, so they need not leave CPUs to the model."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(32, available))


def executor() -> llguidance.LLExecutor:
    """The process's one LLExecutor (created on first use)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        with _EXECUTOR_LOCK:
            if _EXECUTOR is None:
                _EXECUTOR = llguidance.LLExecutor(threads())
    return _EXECUTOR


def fill(matchers: list, width: int, parallel: bool = False) -> torch.Tensor:
    """``int32 [B, width]`` (CPU): the bitmask of the tokens each matcher allows next, computed
    on the calling thread, or with ``parallel`` on llguidance's threads (one LLExecutor call)."""
    bitmask = torch.empty(len(matchers), width, dtype=torch.int32)  # (B, W), contiguous
    row_bytes = 4 * width
    if parallel and len(matchers) > 1:
        executor().unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], bitmask.data_ptr(),
                                           row_bytes, len(matchers))
    else:
        for i, m in enumerate(matchers):
            m.unsafe_compute_mask_ptr(bitmask.data_ptr() + i * row_bytes, row_bytes)
    return bitmask


class Pacer:
    """Chooses, for one grammar, where a batch's masks are computed: on llguidance's threads only
    when the work is large enough to pay for waking them. Handing rows to the thread pool costs
    tens of microseconds, and far more on a busy machine (measured on 2 shared cores: 8 rows of a
    JSON schema over GPT-2's vocabulary took 0.3 ms on the calling thread and 1.3 to 2 ms through
    the pool). So it keeps a running estimate of one row's time and goes parallel when a step's
    rows would take more than ``PARALLEL_ABOVE`` seconds on one thread. Speed only: the masks are
    the same either way."""

    PARALLEL_ABOVE = 1e-3

    def __init__(self):
        self.row_seconds = 0.0  # running estimate of one row's mask time on one thread

    def fill(self, matchers: list, width: int) -> torch.Tensor:
        b, n = len(matchers), threads()
        parallel = b > 1 and n > 1 and self.row_seconds * b > self.PARALLEL_ABOVE
        start = time.perf_counter()
        bitmask = fill(matchers, width, parallel)
        per_row = (time.perf_counter() - start) * (min(n, b) if parallel else 1) / max(b, 1)
        self.row_seconds = per_row if not self.row_seconds else 0.8 * self.row_seconds + 0.2 * per_row
        return bitmask


def clear_bits(bitmask: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    """``bitmask`` with the bits of ``ids`` cleared in every row (in place; returned)."""
    for t in ids:
        word, bit = divmod(t, 32)
        if word < bitmask.shape[1]:
            bitmask[:, word] &= ~(1 << bit) if bit < 31 else 0x7FFFFFFF
    return bitmask


def unpack(bitmask: torch.Tensor, vocab: int, device: torch.device) -> torch.Tensor:
    """``bool [B, vocab]`` on ``device``: token ``t`` of row ``r`` is allowed iff its bit is set.
    Columns past ``32 * W`` are False."""
    b, w = bitmask.shape
    if device.type == "cpu" and numpy is not None and sys.byteorder == "little":
        bits = numpy.unpackbits(bitmask.numpy().view(numpy.uint8), axis=-1, bitorder="little")  # (B, 32W) u8
        allowed = torch.from_numpy(bits.view(numpy.bool_))  # (B, 32W)
    else:
        words = bitmask.to(device, non_blocking=True)
        allowed = (words.unsqueeze(-1) & _bit_values(device)).ne(0).view(b, 32 * w)  # (B, 32W)
    if allowed.shape[1] >= vocab:
        return allowed[:, :vocab]
    pad = torch.zeros(b, vocab - allowed.shape[1], dtype=torch.bool, device=allowed.device)
    return torch.cat([allowed, pad], dim=1)  # (B, vocab)


def _bit_values(device: torch.device) -> torch.Tensor:
    found = _BITS.get(device)
    if found is None:
        values = [1 << i for i in range(31)] + [-(1 << 31)]  # bit 31 is the sign of an int32
        found = _BITS[device] = torch.tensor(values, dtype=torch.int32, device=device)
    return found
