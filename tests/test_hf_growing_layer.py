"""samplekit.hf.growing_layer: a transformers cache layer that writes new positions into room
instead of concatenating, and holds exactly what transformers' DynamicLayer holds."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from transformers.cache_utils import DynamicCache, DynamicLayer  # noqa: E402

from samplekit.decoding import fill_from_the_end  # noqa: E402
from samplekit.hf.growing_layer import GrowingLayer, grow_layers  # noqa: E402
from samplekit.hf.model import JoinableHFCache  # noqa: E402

H, D = 2, 3

ops = st.lists(st.one_of(
    st.tuples(st.just("update"), st.integers(1, 300)),
    st.tuples(st.just("select"), st.lists(st.integers(0, 3), min_size=1, max_size=4)),
    st.tuples(st.just("leave"), st.sets(st.integers(0, 5))),
    st.tuples(st.just("crop"), st.integers(1, 5)),
    st.tuples(st.just("assign"), st.integers(0, 3)),
), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(ops, st.integers(1, 4), st.integers(0, 8))
def test_a_growing_layer_holds_what_a_dynamic_layer_holds_after_any_updates_selects_crops(script, batch, room):
    """Invariant: after any sequence of update / batch_select_indices (any rows, or rows leaving
    as the scheduler fills their holes) / crop / assignment, GrowingLayer's keys and values (and
    what update returns) equal DynamicLayer's, whatever its row room."""
    grown, plain = GrowingLayer(room), DynamicLayer()
    gen = torch.Generator().manual_seed(0)
    for op, arg in script:
        if op == "update":
            k, v = torch.randn(batch, H, arg, D, generator=gen), torch.randn(batch, H, arg, D, generator=gen)
            got, want = grown.update(k, v), plain.update(k, v)
            assert all(torch.equal(g, w) for g, w in zip(got, want))
        elif op == "select" and plain.get_seq_length():
            rows = torch.tensor([r % batch for r in arg])
            grown.batch_select_indices(rows)
            plain.batch_select_indices(rows)
            batch = len(rows)
        elif op == "leave" and plain.get_seq_length():
            rows = torch.tensor(fill_from_the_end(batch, {g for g in arg if g < batch}), dtype=torch.long)
            grown.batch_select_indices(rows)
            plain.batch_select_indices(rows)
            batch = len(rows)
            if not batch:
                return
        elif op == "crop" and plain.get_seq_length() > arg:
            grown.crop(-arg)
            plain.crop(-arg)
        elif op == "assign" and plain.get_seq_length() > arg:  # samplekit's compact assigns a slice
            grown.keys, grown.values = grown.keys[:, :, arg:], grown.values[:, :, arg:]
            plain.keys, plain.values = plain.keys[:, :, arg:], plain.values[:, :, arg:]
        assert grown.get_seq_length() == plain.get_seq_length()
        if plain.get_seq_length():
            assert torch.equal(grown.keys, plain.keys) and torch.equal(grown.values, plain.values)


def test_updates_within_the_room_write_in_place():
    """No copy of the cache per step: the buffer stays the same while it has room."""
    layer = GrowingLayer()
    layer.update(torch.randn(2, H, 10, D), torch.randn(2, H, 10, D))
    buffer = layer.keys.data_ptr()
    for _ in range(100):
        layer.update(torch.randn(2, H, 1, D), torch.randn(2, H, 1, D))
    assert layer.keys.data_ptr() == buffer and layer.get_seq_length() == 110


def test_rows_leaving_and_joining_move_only_their_rows_in_place():
    """With row room, rows leaving the scheduler's way and rows joining shorter than the cache
    reuse the buffers (no copy of the rows that stay); the kept rows' values are unchanged."""
    cache = _cache(True, 4, 6, seed=3, room=8)
    layer = cache.inner.layers[0]
    buffer = layer._key_buffer.data_ptr()
    before = layer.keys.clone()
    cache.select_rows(torch.tensor(fill_from_the_end(4, {1})))  # rows 0, 3, 2
    assert layer._key_buffer.data_ptr() == buffer and torch.equal(layer.keys, before[[0, 3, 2]])
    assert cache.join(_cache(True, 2, 4, seed=4), rows=[0, 1]) == (0, 2)
    assert layer._key_buffer.data_ptr() == buffer and layer.keys.shape == (5, H, 6, D)
    assert torch.equal(layer.keys[:3], before[[0, 3, 2]]) and not layer.keys[3:, :, :2].any()


def _cache(growing: bool, rows: int, length: int, seed: int, room: int = 0) -> JoinableHFCache:
    inner = DynamicCache()
    inner.layers = [DynamicLayer(), DynamicLayer()]
    if growing:
        grow_layers(inner, room)
    gen = torch.Generator().manual_seed(seed)
    for layer in inner.layers:
        layer.update(torch.randn(rows, H, length, D, generator=gen), torch.randn(rows, H, length, D, generator=gen))
    cache = JoinableHFCache(inner, rows)
    cache.length = length
    return cache


@pytest.mark.parametrize("mine, theirs", [((2, 5), (3, 9)), ((3, 9), (1, 4)), ((0, 0), (2, 6))])
def test_joining_rows_gives_the_same_cache_with_growing_layers(mine, theirs):
    """join right-aligns both sides (zeros in front of the shorter) whatever the layer kind, and
    a growing cache keeps room after the join."""
    results = []
    for growing in (False, True):
        cache = _cache(growing, *mine, seed=1)
        if not mine[0]:
            cache.batch = 0
        other = _cache(growing, *theirs, seed=2)
        assert cache.join(other, rows=list(range(theirs[0]))[::-1]) == (max(mine[1], theirs[1]) - mine[1],
                                                                        max(mine[1], theirs[1]) - theirs[1])
        results.append(cache)
    for plain, grown in zip(results[0].inner.layers, results[1].inner.layers):
        assert torch.equal(plain.keys, grown.keys) and torch.equal(plain.values, grown.values)
        assert grown._key_buffer.shape[2] > grown.get_seq_length()  # room to decode into
