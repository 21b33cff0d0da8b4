"""The model and cache protocol is code: GPTModel, its KVCache, the Hugging Face adapter and the
tests' custom models satisfy ``samplekit.protocol``; what a model supports is read from its
signatures and declarations, never by allocating a cache."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from samplekit.protocol import Cache, CachedModel, JoinableCache, Model, support
from tests.helpers_models import make_tiny_model
from tests.test_engine import NoCache, ScriptModel


def test_gptmodel_and_its_kvcache_satisfy_the_protocol():
    model = make_tiny_model()
    assert isinstance(model, CachedModel)
    cache = model.new_cache(2, rows=4)
    assert isinstance(cache, Cache) and isinstance(cache, JoinableCache)
    assert support(model).cache_joins and support(model).attention_mask and support(model).batch_invariant


def test_the_tests_custom_models_are_plain_models_without_a_cache():
    for model in (NoCache(make_tiny_model()), ScriptModel({1: [2]})):
        assert isinstance(model, Model) and not isinstance(model, CachedModel)
        found = support(model)
        assert not found.cache and not found.cache_joins and not found.attention_mask


def test_support_allocates_no_cache(monkeypatch):
    model = make_tiny_model()

    def refuse(*args, **kwargs):
        raise AssertionError("support() called new_cache")

    monkeypatch.setattr(model, "new_cache", refuse)
    monkeypatch.setattr(type(model), "cache_joins", True, raising=False)
    assert support(model).cache and support(model).cache_joins


def test_a_cache_without_join_and_compact_is_not_joinable():
    class Cacheless:
        length = 0

        def select_rows(self, rows):
            pass

    class Model1(torch.nn.Module):
        def new_cache(self, batch_size: int, rows: int | None = None) -> Cacheless:
            return Cacheless()

        def forward(self, ids, cache=None):
            return torch.zeros(*ids.shape, 8)

    assert isinstance(Cacheless(), Cache) and not isinstance(Cacheless(), JoinableCache)
    found = support(Model1())
    assert found.cache and not found.cache_joins


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_the_hugging_face_adapter_and_its_caches_satisfy_the_protocol():
    from transformers import GPT2Config, GPT2LMHeadModel

    from samplekit.hf.model import HFModel

    torch.manual_seed(0)
    model = HFModel(GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)))
    assert isinstance(model, CachedModel) and support(model).cache_joins
    assert isinstance(model.new_cache(1), JoinableCache)
