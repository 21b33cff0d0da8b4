"""What the decoding loop calls on a model and on its KV cache, written as ``typing.Protocol``.

A **model** (``Model``) is any callable mapping token ids ``LongTensor [B, T]`` to logits
``[B, T, V]`` (or an output with ``.logits``): the loop re-feeds the window at every step. Its
``forward`` may take these keywords, found from its signature once per class, never by calling
it: ``attention_mask`` ``[B, S]`` (False on padding) with ``position_ids`` ``[B, T]`` (ragged
batches; without them each group of equally padded rows runs on its own), ``last_only=True``
(logits of the last position only), ``batch_invariant=True`` (every row's logits independent of
the rest of the batch). Optional attributes: ``context_length`` (or ``config.context_length``),
``config.vocab_size``, ``prepare_for_inference()`` (called before generating and again whenever a
parameter was replaced, moved or changed).

A **cached model** (``CachedModel``) also has ``new_cache(batch_size, rows=None)`` returning a
``Cache``, and its forward takes ``cache=``: it appends the new positions' keys and values and
returns logits for the new positions only. Its caches may be ``JoinableCache`` s (rows join a
running batch: the scheduler's cached path); a model says so with ``cache_joins = True`` (or by
annotating ``new_cache`` to return a class that has ``join`` and ``compact``), so the loop learns
it without allocating a cache. ``support(model)`` is what the loop reads.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Cache(Protocol):
    """A KV cache: ``length`` positions filled (the same for every row: ragged rows are
    right-aligned, padding in front), and ``select_rows`` to keep only some rows (finished rows
    leave the batch)."""

    length: int

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows at the indices ``rows`` (LongTensor), in that order."""


@runtime_checkable
class JoinableCache(Cache, Protocol):
    """A cache that rows can join at any step (continuous batching)."""

    def join(self, other: Any, rows: list[int] | None = None) -> tuple[int, int]:
        """Append ``other``'s rows (``rows``: which, repeats allowed; default all) after this cache's,
        right-aligned: the shorter side gets padding positions in front. Returns the positions added
        in front of the rows already here and in front of the joining rows."""

    def compact(self, positions: int) -> None:
        """Drop the first ``positions`` positions of every row (padding in all of them)."""


@runtime_checkable
class Model(Protocol):
    """Token ids ``[B, T]`` to logits ``[B, T, V]``."""

    def __call__(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class CachedModel(Model, Protocol):
    """A model with a KV cache: ``model(ids, cache=cache, position_ids=, attention_mask=)``."""

    def new_cache(self, batch_size: int, rows: int | None = None) -> Cache:
        """An empty cache for ``batch_size`` rows (room for ``rows`` when rows will join)."""


@dataclass(frozen=True)
class Support:
    """What a model supports, as the loop uses it."""

    cache: bool            # new_cache() and forward(cache=)
    cache_joins: bool      # new_cache(batch, rows=) returns JoinableCaches
    attention_mask: bool   # forward(attention_mask=, position_ids=)
    last_only: bool        # forward(last_only=True)
    batch_invariant: bool  # forward(batch_invariant=True)


def support(model) -> Support:
    """What ``model`` supports, read from its signatures and declarations (no call, no cache)."""
    new_cache = getattr(model, "new_cache", None)
    cache = callable(new_cache)
    return Support(cache=cache, cache_joins=cache and _cache_joins(model, new_cache),
                   attention_mask=accepts(model, "attention_mask") and accepts(model, "position_ids"),
                   last_only=accepts(model, "last_only"), batch_invariant=accepts(model, "batch_invariant"))


def _cache_joins(model, new_cache) -> bool:
    declared = getattr(model, "cache_joins", None)
    if isinstance(declared, bool):
        return declared and _callable_accepts(new_cache, "rows")
    return _returns_joinable(getattr(new_cache, "__func__", new_cache))  # per function, read once


@functools.lru_cache(maxsize=256)
def _returns_joinable(new_cache) -> bool:
    """``new_cache`` takes ``rows`` and is annotated to return a class with ``join`` and ``compact``."""
    if not _callable_accepts(new_cache, "rows"):
        return False
    try:
        returned = inspect.signature(new_cache, eval_str=True).return_annotation
    except Exception:  # noqa: BLE001 - an annotation that does not resolve declares nothing
        return False
    return isinstance(returned, type) and callable(getattr(returned, "join", None)) and \
        callable(getattr(returned, "compact", None))


def accepts(model, name: str) -> bool:
    """Whether calling ``model`` takes the keyword ``name`` (read once per class for modules)."""
    if isinstance(model, torch.nn.Module):
        return _forward_accepts(type(model), name)
    return _callable_accepts(model, name)


@functools.lru_cache(maxsize=256)
def _forward_accepts(cls: type, name: str) -> bool:
    return _callable_accepts(cls.forward, name)


def _callable_accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def model_device(model) -> torch.device:
    """Where the model's parameters live (CPU for a model without any)."""
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def vocab_size(model) -> int | None:
    """The model's vocabulary size, when it says (``config.vocab_size``)."""
    value = getattr(getattr(model, "config", None), "vocab_size", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def model_context_length(model) -> int | None:
    """``model.context_length`` or ``model.config.context_length``, else None."""
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, "context_length", None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def undecodable_ids(model_vocab: int | None, tokenizer, device) -> torch.Tensor | None:
    """The ids of the model's vocabulary that ``tokenizer`` cannot decode (a padded vocabulary's
    extra rows, gaps in the tokenizer's ids), never sampled; a tokenizer the model cannot serve
    is refused (``check_compatible``)."""
    if model_vocab is None or tokenizer is None:
        return None
    from samplekit.model.tokenizer import check_compatible, undecodable_ids as missing

    check_compatible(model_vocab, tokenizer, "the tokenizer")
    ids = missing(tokenizer, model_vocab)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


_PREPARED: "weakref.WeakKeyDictionary[Any, list]" = weakref.WeakKeyDictionary()


def prepare(model) -> None:
    """Call ``model.prepare_for_inference()`` unless it ran since the parameters last changed:
    replaced (a new ``nn.Parameter`` object), changed in place (an optimizer step,
    ``load_state_dict``) or moved (``.to()``)."""
    prepare_for_inference = getattr(model, "prepare_for_inference", None)
    if not callable(prepare_for_inference):
        return
    if _PREPARED.get(model) == _fingerprint(model):
        return
    prepare_for_inference()
    _PREPARED[model] = _fingerprint(model)


def _fingerprint(model) -> list:
    """Each parameter's identity, storage and version counter."""
    params = model.parameters() if isinstance(model, torch.nn.Module) else ()
    return [(id(p), p.data_ptr(), p._version) for p in params]
