"""A transformers cache layer with room: new positions and joining rows are written in place.

transformers' ``DynamicLayer.update`` concatenates the new keys and values to everything cached
(``torch.cat``), so each decoding step copies the whole cache: for 16 rows of 300 positions of a
768-wide, 12-layer Llama shape that copy cost as much as the step's matrix products. And the
scheduler's rows join and leave: with exact-size tensors each join and each departure copies
every row. A ``GrowingLayer`` keeps keys and values in buffers ``[R, H, C, D]`` with room for
rows (``rows``: the most the batch holds) and for positions (a chunk past the filled ones);
``keys`` and ``values`` are views of the filled part, so whatever reads or assigns them
(transformers' masks, ``crop``, samplekit's ``compact``) works unchanged. Assigning them sets the
buffer to exactly that tensor; the next update makes room again (one copy), so growth costs
amortised O(1) per position. Rows leaving the batch's end-filling way (``fill_from_the_end``)
move only the rows that fill the holes, and rows joining shorter than the cache are written into
the row room.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["GROWTH", "GrowingLayer", "grow_layers", "room_for", "stacked_rows"]

GROWTH = 256  # positions of room made when a buffer is full (or half what it holds, if more)


def room_for(positions: int) -> int:
    """The positions a buffer holding ``positions`` is given: those plus room to grow."""
    return positions + max(GROWTH, positions // 2)


def _filled_view(slot: int) -> property:
    """The keys (``slot`` 0) or values (1): a view of the filled part of the buffer. Assigning a
    tensor makes it the buffer, exactly filled (each side keeps its own shape, whichever order
    transformers assigns them in)."""
    name = ("_key_buffer", "_value_buffer")[slot]

    def get(self) -> torch.Tensor | None:
        return _filled_part(getattr(self, name), self._shape[slot])

    def set(self, tensor: torch.Tensor | None) -> None:
        setattr(self, name, tensor)
        self._shape[slot] = _shape(tensor)

    return property(get, set)


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values ``[B, H, S, D]`` are views of buffers with room
    (``rows``: the rows to make room for)."""

    def __init__(self, rows: int = 0, **kwargs):
        self.row_room = rows
        self._key_buffer = self._value_buffer = None
        self._shape = [(0, 0), (0, 0)]  # (rows, positions) filled in the key and in the value buffer
        super().__init__(**kwargs)

    keys = _filled_view(0)
    values = _filled_view(1)

    def _hold(self, keys: torch.Tensor, values: torch.Tensor, rows: int, filled: int) -> None:
        self._key_buffer, self._value_buffer = keys, values
        self._shape = [(rows, filled), (rows, filled)]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new positions after the filled ones (making room first when needed); the
        filled keys and values, as views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self._key_buffer, self._value_buffer
        (rows, start), new = self._shape[0], key_states.shape[-2]
        if not _fits(keys, key_states, rows, start + new):
            B, H, _, D = key_states.shape
            kept = start if rows else 0
            keys, values = (_with_room(old, fresh, kept, max(B, self.row_room), room_for(start + new))
                            for old, fresh in ((keys, key_states), (values, value_states)))
            rows = B
        keys[:rows, :, start:start + new] = key_states
        values[:rows, :, start:start + new] = value_states
        self._hold(keys, values, rows, start + new)
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows ``indices``. When the rows kept in place stay and the others come
        from past them (how the scheduler fills holes), only those rows move, in place."""
        rows, filled = self._shape[0]
        if not filled or self._key_buffer is None or self._key_buffer.dim() != 4:
            return
        order = indices.tolist()
        n = len(order)
        moved = [i for i, j in enumerate(order) if i != j]
        if len(set(order)) == n and all(order[i] >= n for i in moved):
            if moved:
                into = torch.tensor(moved, dtype=torch.long, device=indices.device)
                come = torch.tensor([order[i] for i in moved], dtype=torch.long, device=indices.device)
                for buffer in (self._key_buffer, self._value_buffer):
                    buffer.index_copy_(0, into, buffer.index_select(0, come))
            self._hold(self._key_buffer, self._value_buffer, n, filled if n else 0)
        else:
            self._hold(self._key_buffer[:rows].index_select(0, indices),
                       self._value_buffer[:rows].index_select(0, indices), n, filled)

    def join_rows(self, keys: torch.Tensor, values: torch.Tensor, before: int, after: int, filled: int) -> None:
        """Append rows ``keys``/``values`` ``[B2, H, S2, D]`` right-aligned with those here:
        ``before`` zero positions in front of the rows here, ``after`` in front of the joining
        ones, ``filled`` positions each. In place when the rows here need no shift and the
        buffers have the room."""
        rows = self._shape[0][0]
        total = rows + keys.shape[0]
        if before == 0 and _fits(self._key_buffer, keys, total, filled, joining=True):
            for buffer, joining in ((self._key_buffer, keys), (self._value_buffer, values)):
                buffer[rows:total, :, :after] = 0
                buffer[rows:total, :, after:filled] = joining
            self._hold(self._key_buffer, self._value_buffer, total, filled)
            return
        present = [self.keys, self.values] if rows else [None, None]
        capacity = (max(total, self.row_room), room_for(filled))
        self._hold(*(stacked_rows(old, new, before, after, filled, capacity)
                     for old, new in zip(present, (keys, values))), total, filled)


def stacked_rows(present: torch.Tensor | None, joining: torch.Tensor, before: int, after: int, filled: int,
                 capacity: tuple[int, int] | None = None) -> torch.Tensor:
    """``[B1 + B2, H, filled, D]`` (or a buffer of ``capacity`` (rows, positions) holding it):
    ``present``'s rows (``before`` zero positions in front) over ``joining``'s (``after`` in
    front)."""
    B2, H, _, D = joining.shape
    B1 = 0 if present is None else present.shape[0]
    rows, positions = capacity or (B1 + B2, filled)
    out = joining.new_empty(rows, H, positions, D)
    if present is not None:
        out[:B1, :, :before] = 0
        out[:B1, :, before:filled] = present
    out[B1:B1 + B2, :, :after] = 0
    out[B1:B1 + B2, :, after:filled] = joining
    return out


def _fits(buffer: torch.Tensor | None, like: torch.Tensor, rows: int, positions: int, joining: bool = False) -> bool:
    """Whether ``buffer`` holds ``rows`` rows of ``positions`` positions shaped like ``like``
    (the same rows exactly, unless ``joining``: at least)."""
    if buffer is None or buffer.dim() != 4 or buffer.shape[1] != like.shape[1] or buffer.shape[3] != like.shape[3]:
        return False
    if buffer.dtype != like.dtype or buffer.device != like.device or positions > buffer.shape[2]:
        return False
    return rows <= buffer.shape[0] if joining else rows == like.shape[0] and rows <= buffer.shape[0]


def _filled_part(buffer: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor | None:
    return buffer if buffer is None or buffer.dim() != 4 else buffer[:shape[0], :, :shape[1]]


def _shape(tensor: torch.Tensor | None) -> tuple[int, int]:
    return (tensor.shape[0], tensor.shape[-2]) if tensor is not None and tensor.dim() == 4 else (0, 0)


def _with_room(old: torch.Tensor | None, fresh: torch.Tensor, filled: int, rows: int, positions: int) -> torch.Tensor:
    """A ``[rows, H, positions, D]`` buffer shaped like ``fresh`` holding ``old``'s first
    ``filled`` positions of its first ``fresh.shape[0]`` rows."""
    B, H, _, D = fresh.shape
    buffer = fresh.new_empty(rows, H, positions, D)
    if filled:
        buffer[:B, :, :filled] = old[:B, :, :filled]
    return buffer


def grow_layers(cache, rows: int = 0) -> None:
    """Replace every plain ``DynamicLayer`` of an empty transformers cache by a GrowingLayer with
    room for ``rows`` rows."""
    cache.layers = [GrowingLayer(rows) if type(layer) is DynamicLayer else layer for layer in cache.layers]
