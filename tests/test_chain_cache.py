"""One chain cache for every entry point: equal specs share one Chain; it is bounded by count and
by an estimate of memory (declared by a processor, or measured), least recently used first."""

from __future__ import annotations

import torch

from samplekit.chain import Chain
from samplekit.chain_cache import ChainCache, chain_bytes
from samplekit.processor import Processor


class Big(Processor):
    """Holds ``mib`` MiB of tensor (an expanded schema, say)."""

    name = "big_for_cache"

    def __init__(self, mib: int = 1):
        super().__init__()
        self.table = torch.zeros(mib * 2**18)  # float32: 4 bytes each

    def process(self, input_ids, scores, ctx):
        return scores


class Declared(Big):
    """Declares its own size."""

    name = "declared_for_cache"

    def memory_bytes(self) -> int:
        return 7


def build(spec: dict) -> Chain:
    return Chain([Big(spec["mib"]), *Chain.from_names("greedy").processors])


def test_equal_specs_give_one_chain_and_key_order_does_not_matter():
    cache = ChainCache(lambda spec: Chain.from_names(*spec["names"]))
    a = cache.get({"names": ["greedy"], "x": 1})
    assert cache.get({"x": 1, "names": ["greedy"]}) is a and len(cache) == 1


def test_the_least_recently_used_chain_leaves_past_the_count():
    cache = ChainCache(build, max_chains=2)
    a = cache.get({"mib": 0, "i": 0})
    cache.get({"mib": 0, "i": 1})
    cache.get({"mib": 0, "i": 0})  # used again: now the most recent
    cache.get({"mib": 0, "i": 2})
    assert cache.get({"mib": 0, "i": 0}) is a and len(cache) == 2


def test_memory_bounds_the_cache_and_a_chain_over_the_budget_is_not_kept():
    cache = ChainCache(build, max_bytes=5 * 2**20)
    kept = [cache.get({"mib": 2, "i": i}) for i in range(3)]
    assert len(cache) == 2 and cache.bytes <= 5 * 2**20  # three 2 MiB chains do not fit in 5 MiB
    assert cache.get({"mib": 2, "i": 2}) is kept[2]
    huge = cache.get({"mib": 6})
    assert cache.get({"mib": 6}) is not huge  # larger than the budget: built each time, never kept


def test_a_processors_declared_size_replaces_the_measurement():
    measured = chain_bytes(Chain([Big(1), *Chain.from_names("greedy").processors]))
    declared = chain_bytes(Chain([Declared(1), *Chain.from_names("greedy").processors]))
    assert measured >= 2**20 and declared < 2**20


def test_a_chain_is_measured_again_after_its_first_use():
    """Processors fill caches when they first run (a compiled grammar): the second ``get``
    measures again, and the memory bound then evicts older chains."""
    cache = ChainCache(build, max_bytes=3 * 2**20)
    old = cache.get({"mib": 1, "i": 0})
    grown = cache.get({"mib": 0, "i": 1})
    grown.processors[0].table = torch.zeros(2 * 2**18 + 1)  # 2 MiB filled on first use
    assert cache.get({"mib": 0, "i": 1}) is grown and cache.bytes > 2 * 2**20
    assert cache.get({"mib": 1, "i": 0}) is not old  # evicted to stay under 3 MiB
