"""One cache of built chains for every entry point (the scheduler, ``samplekit run``, the server).

Equal specs give one ``Chain`` object, so their requests share one chain run in the batch, and a
chain is built (a grammar compiled, a schema's enums expanded) once. The cache is bounded by count
and by an estimate of memory: a chain's size is what its processors declare (a ``memory_bytes()``
method: a plugin holding native memory, such as a compiled grammar, should declare it) or else
what they hold (tensors, arrays, strings, containers), measured when built and once more when it
is next asked for (processors fill caches when they first run). The least recently used chains
leave first; a chain larger than the whole budget is built and returned but not kept.
"""

from __future__ import annotations

import collections
import json
import math
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

MAX_CHAINS = 256
MAX_BYTES = 512 * 2**20
MEASURE_LIMIT = 200_000  # objects walked per processor at most (a size estimate, not an audit)
_SKIPPED = (type, types.FunctionType, types.MethodType, types.ModuleType, types.BuiltinFunctionType)


class ChainCache:
    """``get(spec)``: the Chain ``build(spec)`` made for an equal spec, built on first use.

    ``max_chains`` and ``max_bytes`` bound what is kept (module docstring). Thread-safe."""

    def __init__(self, build: Callable[[Any], Any], *, max_chains: int = MAX_CHAINS, max_bytes: int = MAX_BYTES):
        if max_chains < 1 or max_bytes < 1:
            raise ValueError(f"max_chains and max_bytes must be >= 1, got {max_chains} and {max_bytes}")
        self.build, self.max_chains, self.max_bytes = build, max_chains, max_bytes
        self._kept: collections.OrderedDict[str, tuple[Any, int, bool]] = collections.OrderedDict()  # chain,
        # its size, measured again
        self._lock = threading.Lock()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, spec: Any) -> Any:
        """The chain for ``spec`` (any JSON-able value; keys compare after sorting)."""
        key = spec_key(spec)
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                if found[2]:
                    return found[0]
        if found is not None:  # measured again once it has run: processors build caches on first use
            size = chain_bytes(found[0])
            with self._lock:
                if self._kept.get(key) is found:
                    self._kept[key] = (found[0], size, True)
                    self.bytes += size - found[1]
                    self._evict()
            return found[0]
        chain = self.build(spec)
        size = chain_bytes(chain)
        with self._lock:
            if key in self._kept:  # built meanwhile by another thread: keep the first
                return self._kept[key][0]
            if size <= self.max_bytes:
                self._kept[key] = (chain, size, False)
                self.bytes += size
                self._evict()
        return chain

    def _evict(self) -> None:
        """The least recently used chains leave until both bounds hold."""
        while len(self._kept) > self.max_chains or self.bytes > self.max_bytes:
            _, (_, gone, _) = self._kept.popitem(last=False)
            self.bytes -= gone


def spec_key(spec: Any) -> str:
    """A string equal for equal specs (dict keys sorted, tuples as lists, NaN and inf spelled)."""
    return json.dumps(spec, sort_keys=True, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return repr(value)


def chain_bytes(chain) -> int:
    """The estimated memory of ``chain``'s processors (module docstring)."""
    total = 0
    for p in getattr(chain, "processors", ()):
        declared = getattr(p, "memory_bytes", None)
        total += int(declared()) if callable(declared) else measure(p)
    return total


def measure(obj: Any) -> int:
    """Bytes ``obj`` holds: tensors' and arrays' buffers, containers and attributes followed (each
    object counted once, at most MEASURE_LIMIT objects)."""
    seen: set[int] = set()
    stack, total = [obj], 0
    while stack and len(seen) < MEASURE_LIMIT:
        item = stack.pop()
        if id(item) in seen or item is None or isinstance(item, _SKIPPED):
            continue
        seen.add(id(item))
        nbytes = _buffer_bytes(item)
        if nbytes is not None:
            total += nbytes
            continue
        try:
            total += sys.getsizeof(item)
        except TypeError:
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif not isinstance(item, (str, bytes, int, float, bool)):
            attrs = getattr(item, "__dict__", None)
            if isinstance(attrs, dict):
                stack.append(attrs)
    return total


def _buffer_bytes(item: Any) -> int | None:
    """A tensor's or array's buffer size (None for anything else)."""
    element = getattr(item, "element_size", None)
    if callable(element) and callable(getattr(item, "nelement", None)):  # torch.Tensor
        return int(item.nelement() * item.element_size())
    nbytes = getattr(item, "nbytes", None)
    if isinstance(nbytes, int) and hasattr(item, "dtype"):  # numpy arrays
        return nbytes
    return None
