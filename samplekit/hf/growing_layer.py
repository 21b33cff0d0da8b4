"""A transformers cache layer that grows by chunks instead of by a copy at every step.

transformers' ``DynamicLayer.update`` concatenates the new keys and values to everything cached
(``torch.cat``), so each decoding step copies the whole cache: for 16 rows of 300 positions of a
768-wide, 12-layer Llama shape that copy cost as much as the step's matrix products. A
``GrowingLayer`` keeps keys and values in buffers with room past the filled positions and writes
new positions in place; ``keys`` and ``values`` are views of the filled part, so whatever reads or
assigns them (transformers' masks, ``crop``, samplekit's ``compact``) works unchanged. Assigning
them sets the buffer to exactly that tensor; the next update makes room again (one copy), so
growth costs amortised O(1) per position. Dropping rows and joining rows keep the room.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["GROWTH", "GrowingLayer", "grow_layers", "room_for"]

GROWTH = 256  # positions of room made when a buffer is full (or half what it holds, if more)


def room_for(positions: int) -> int:
    """The positions a buffer holding ``positions`` is given: those plus room to grow."""
    return positions + max(GROWTH, positions // 2)


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values ``[B, H, S, D]`` are views of buffers with room."""

    def __init__(self, **kwargs):
        self._key_buffer = self._value_buffer = None
        self._filled = [0, 0]  # the positions filled in the key and in the value buffer
        super().__init__(**kwargs)

    @property
    def keys(self) -> torch.Tensor | None:
        return _filled_part(self._key_buffer, self._filled[0])

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self._key_buffer, self._filled[0] = tensor, _length(tensor)

    @property
    def values(self) -> torch.Tensor | None:
        return _filled_part(self._value_buffer, self._filled[1])

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._value_buffer, self._filled[1] = tensor, _length(tensor)

    def hold(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
        """Take ``keys``/``values`` buffers ``[B, H, capacity, D]`` whose first ``filled``
        positions are the cache (the rest is room)."""
        self._key_buffer, self._value_buffer, self._filled = keys, values, [filled, filled]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the new positions after the filled ones (making room first when needed); the
        filled keys and values, as views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values = self._key_buffer, self._value_buffer
        start, new = self._filled[0], key_states.shape[-2]
        if keys is None or keys.dim() != 4 or keys.shape[:2] != key_states.shape[:2] \
                or start + new > keys.shape[-2]:
            capacity = room_for(start + new)
            keys, values = (_with_room(old, fresh, start, capacity)
                            for old, fresh in ((keys, key_states), (values, value_states)))
            self._key_buffer, self._value_buffer = keys, values
        keys[:, :, start:start + new] = key_states
        values[:, :, start:start + new] = value_states
        self._filled = [start + new, start + new]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the rows ``indices`` (the room kept)."""
        if self._filled[0]:
            self._key_buffer = self._key_buffer.index_select(0, indices)
            self._value_buffer = self._value_buffer.index_select(0, indices)


def _filled_part(buffer: torch.Tensor | None, filled: int) -> torch.Tensor | None:
    return buffer if buffer is None or buffer.dim() != 4 else buffer[:, :, :filled]


def _length(tensor: torch.Tensor | None) -> int:
    return tensor.shape[-2] if tensor is not None and tensor.dim() == 4 else 0


def _with_room(old: torch.Tensor | None, fresh: torch.Tensor, filled: int, capacity: int) -> torch.Tensor:
    """A ``[B, H, capacity, D]`` buffer shaped like ``fresh`` holding ``old``'s first ``filled``."""
    B, H, _, D = fresh.shape
    buffer = fresh.new_empty(B, H, capacity, D)
    if filled:
        buffer[:, :, :filled] = old[:, :, :filled]
    return buffer


def grow_layers(cache) -> None:
    """Replace every plain ``DynamicLayer`` of an empty transformers cache by a GrowingLayer."""
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
