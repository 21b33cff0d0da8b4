"""top_k's ``min_tokens_to_keep``: k is raised to at least that many, on the dense path, on the
top-k candidate strategy, and with rows that carry their own k."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.processors.selectors import Multinomial
from samplekit.processors.top_k import TopK


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 12), keep=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_top_k_keeps_the_largest_max_of_k_and_min_tokens_to_keep(k, keep, seed):
    """Invariant: exactly the max(k, min_tokens_to_keep) largest logits stay (no ties in the data)."""
    scores = torch.randn(3, 10, generator=torch.Generator().manual_seed(seed))
    out = TopK(k=k, min_tokens_to_keep=keep)(None, scores)
    kept = torch.isfinite(out).sum(dim=-1)
    assert kept.tolist() == [min(max(k, keep), 10)] * 3
    assert torch.equal(out, TopK(k=max(k, keep))(None, scores))


def test_top_k_with_min_tokens_to_keep_equals_transformers_top_k_warper():
    transformers = pytest.importorskip("transformers")
    scores = torch.randn(4, 30, generator=torch.Generator().manual_seed(2))
    for k, keep in ((2, 5), (6, 3), (1, 1)):
        want = transformers.TopKLogitsWarper(top_k=k, min_tokens_to_keep=keep)(None, scores.clone())
        assert torch.equal(TopK(k=k, min_tokens_to_keep=keep)(None, scores), want), (k, keep)


def test_keeps_top_promises_the_raised_k():
    assert TopK(k=2, min_tokens_to_keep=5).keeps_top(100) == 5
    assert TopK(k=2, min_tokens_to_keep=100).keeps_top(100) is None  # keeps every token
    assert TopK(k=8, min_tokens_to_keep=5).keeps_top(100) == 8


def _draws(chain: Chain, rows: int, vocab: int, steps: int, seed: int, row_chains=None) -> list[list[int]]:
    run = chain.start(rows, seeds=range(seed, seed + rows), row_chains=row_chains)
    generator = torch.Generator().manual_seed(seed)
    ids, out = torch.zeros(rows, 1, dtype=torch.long), []
    for _ in range(steps):
        out.append(run.select(ids, torch.randn(rows, vocab, generator=generator) * 3).tolist())
    return out


@pytest.mark.parametrize("k, keep", [(2, 7), (7, 2), (1, 40)])
def test_the_top_k_candidate_strategy_draws_the_dense_paths_tokens(k, keep, monkeypatch):
    sizes = []
    try:  # the tensor path, not samplekit-native's C kernel (which draws without select_candidates)
        import samplekit_native
        monkeypatch.setattr(samplekit_native, "library", lambda: None)
    except ImportError:
        pass
    original = Multinomial.select_candidates

    def counted(self, input_ids, values, indices, ctx):
        sizes.append(values.shape[-1])
        return original(self, input_ids, values, indices, ctx)

    specs = (("temperature", {"value": 0.9}), ("top_k", {"k": k, "min_tokens_to_keep": keep}), "multinomial")
    fast, dense = Chain.from_names(*specs), Chain.from_names(*specs, fast_paths=False)
    want = _draws(dense, 4, 60, 20, seed=k)
    monkeypatch.setattr(Multinomial, "select_candidates", counted)
    assert _draws(fast, 4, 60, 20, seed=k) == want
    assert sizes and set(sizes) == {max(k, keep)}  # sampled among exactly max(k, keep) candidates


def test_rows_with_their_own_k_keep_at_least_min_tokens_to_keep_on_the_fast_path():
    def chain(k, fast=True):
        return Chain.from_names(("top_k", {"k": k, "min_tokens_to_keep": 4}), "multinomial", fast_paths=fast)

    own = [chain(k) for k in (1, 9, 2)]
    together = _draws(chain(1), 3, 50, 15, seed=5, row_chains=own)
    dense = _draws(chain(1, fast=False), 3, 50, 15, seed=5, row_chains=[chain(k, False) for k in (1, 9, 2)])
    assert together == dense
    for r, k in enumerate((1, 9, 2)):  # and each row as alone
        alone = Chain.from_names(("top_k", {"k": k, "min_tokens_to_keep": 4}), "multinomial", fast_paths=False)
        run = alone.start(1, seeds=[5 + r])
        generator = torch.Generator().manual_seed(5)
        ids = torch.zeros(1, 1, dtype=torch.long)
        mine = [run.select(ids, (torch.randn(3, 50, generator=generator) * 3)[r:r + 1]).item() for _ in range(15)]
        assert mine == [step[r] for step in together]
