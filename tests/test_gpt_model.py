"""GPTModel's forward paths agree: full, cached in chunks, padded, and last-position-only."""

from __future__ import annotations

import pytest
import torch

from samplekit.engine import generate
from samplekit.model.gpt import GPTModel, ModelConfig


def tiny() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(ModelConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                                drop_rate=0.0)).eval()


def test_cached_chunks_give_the_full_forwards_logits():
    model, ids = tiny(), torch.randint(0, 50, (2, 10))
    full = model(ids)
    cache = model.new_cache(2)
    parts = [model(ids[:, :6], cache=cache), model(ids[:, 6:7], cache=cache), model(ids[:, 7:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 10


@pytest.mark.parametrize("kept", [[3, 0], [1, 3], [0, 1], [2], [0, 1, 2, 3]])
def test_a_cache_that_dropped_rows_continues_as_those_rows_alone(kept):
    """After select_rows (rows in any order, moved or not) the kept rows' cached positions are
    intact, and the next cached step gives the logits a cache of those rows alone would give."""
    model, ids = tiny(), torch.randint(0, 50, (4, 9))
    cache = model.new_cache(4)
    model(ids[:, :8], cache=cache)
    cache.select_rows(torch.tensor(kept))
    assert [tuple(k.shape) for k in cache.keys] == [(len(kept), 4, 16, 8)] * 2 and cache.length == 8
    alone = model.new_cache(len(kept))
    model(ids[kept, :8], cache=alone)
    for mine, theirs in zip(cache.keys + cache.values, alone.keys + alone.values):
        assert torch.equal(mine[:, :, :8], theirs[:, :, :8])
    torch.testing.assert_close(model(ids[kept, 8:], cache=cache), model(ids[kept, 8:], cache=alone))


def test_last_only_returns_the_last_positions_logits():
    model, ids = tiny(), torch.randint(0, 50, (3, 9))
    last = model(ids, last_only=True)
    assert last.shape == (3, 1, 50)
    torch.testing.assert_close(last, model(ids)[:, -1:], rtol=1e-5, atol=1e-5)


def test_fused_qkv_for_inference_keeps_the_logits():
    model, ids = tiny(), torch.randint(0, 50, (2, 8))
    before = model(ids)
    torch.testing.assert_close(model.prepare_for_inference()(ids), before, rtol=1e-5, atol=1e-5)


def test_the_engine_prefills_with_last_only_when_the_model_takes_it():
    model, seen = tiny(), []
    forward = model.forward

    def spy(ids, **kwargs):
        seen.append((ids.shape[1], kwargs.get("last_only", False)))
        return forward(ids, **kwargs)

    model.forward = spy
    generate(model, [[1, 2, 3, 4, 5]], chain="greedy", max_new_tokens=3)
    assert seen[0] == (5, True)  # the prefill: the whole prompt, only the last logits
    assert all(n == 1 for n, _ in seen[1:])


def test_training_mode_drops_the_inference_copies_so_they_never_go_stale():
    model, ids = tiny(), torch.randint(0, 50, (1, 6))
    model.prepare_for_inference()
    model.train()
    with torch.no_grad():
        model.out_head.weight.mul_(2.0)
        model.trf_blocks[0].att.W_query.weight.add_(0.1)
    model.eval()
    fresh = GPTModel(model.config)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(ids), fresh.eval()(ids))
