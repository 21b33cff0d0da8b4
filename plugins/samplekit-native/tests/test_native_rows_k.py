"""Rows with their own k, and processors before the top-k that run densely (penalties), run on
the kernel and draw the tokens samplekit's tensor strategy and the dense path draw."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import samplekit_native as native
from samplekit import Chain
from samplekit.strategies.top_k import TopKCandidates, plan

needs_kernel = pytest.mark.skipif(native.library() is None,
                                  reason="the C kernel cannot be built here (no C compiler, or SAMPLEKIT_NATIVE=0)")


def lm_like(rows: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """Zipf-like logits by rank plus noise (each row its own order): nuclei fall where a model's do."""
    ranks = torch.argsort(torch.rand(rows, vocab, generator=generator), dim=-1).float()
    return -1.3 * torch.log1p(ranks) + 0.5 * torch.randn(rows, vocab, generator=generator)


def client_chain(k: int, temperature: float, p: float, presence: float | None, frequency: float | None) -> Chain:
    """A server's chain for one client's values (samplekit.bench.mixed_values' shape)."""
    specs: list = []
    if frequency is not None:
        specs.append(("frequency_penalty", {"penalty": frequency}))
    if presence is not None:
        specs.append(("presence_penalty", {"penalty": presence}))
    specs += [("temperature", {"value": temperature}), ("top_k", {"k": k}), ("top_p", {"p": p}), "multinomial"]
    return Chain.from_names(*specs)


def runs(chains: list[Chain], seeds: list[int]):
    """The same rows on the kernel, on samplekit's tensor strategy, and densely."""
    base, rows = chains[0], len(chains)
    fast = base.start(rows, seeds=seeds, row_chains=chains)
    slow = base.start(rows, seeds=seeds, row_chains=chains)
    slow.strategy = TopKCandidates(*plan(base))
    slow._follow_values()
    dense = Chain(base.processors, fast_paths=False).start(
        rows, seeds=seeds, row_chains=[Chain(c.processors, fast_paths=False) for c in chains])
    return fast, slow, dense


@needs_kernel
@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), vocab=st.sampled_from([300, 4096]), data=st.data(),
       penalties=st.sampled_from([(None, None), (0.5, None), (0.3, 0.8)]), rounded=st.booleans())
def test_rows_with_their_own_k_draw_the_tensor_strategys_and_the_dense_paths_tokens_on_the_kernel(
        seed, vocab, data, penalties, rounded):
    """Invariant: a run whose rows each keep their own k (and temperature and p), with or without
    penalties before the temperature, draws on the kernel, step after step, the tokens samplekit's
    tensor strategy and the dense path draw from the same seeds (ties at a row's k-th place
    included: rounded scores have them, and every path takes the dense step there)."""
    rows = data.draw(st.integers(1, 6), label="rows")
    values = [(data.draw(st.integers(1, 100), label=f"row {r} k"), data.draw(st.sampled_from([0.3, 0.8, 1.3])),
               data.draw(st.sampled_from([0.8, 0.95, 1.0]))) for r in range(rows)]
    chains = [client_chain(k, t, p, *penalties) for k, t, p in values]
    generator = torch.Generator().manual_seed(seed)
    fast, slow, dense = runs(chains, list(range(seed, seed + rows)))
    assert isinstance(fast.active_strategy, native.NativeCandidates)
    ids = torch.randint(0, vocab, (rows, 6), generator=generator)  # a history the penalties count
    for _ in range(4):
        scores = lm_like(rows, vocab, generator) * 3
        if rounded:
            scores = scores.round()
        drawn = [run.select(ids, scores.clone()) for run in (fast, slow, dense)]
        assert drawn[0].tolist() == drawn[1].tolist() == drawn[2].tolist()
        ids = torch.cat([ids, drawn[0][:, None]], dim=-1)


@needs_kernel
def test_the_mixed_values_workloads_groups_draw_on_the_kernel(monkeypatch):
    """Rows with different k and a group with penalties are served by the kernel's draw, not
    handed to the tensor strategy."""
    drawn = []
    original = native.Kernel.draw
    monkeypatch.setattr(native.Kernel, "draw", lambda self, u: drawn.append(len(u)) or original(self, u))
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 4096, (3, 8), generator=generator)
    for penalties in ((None, None), (0.4, 0.6)):
        chains = [client_chain(k, t, 0.9, *penalties) for k, t in ((20, 0.7), (57, 1.1), (100, 0.4))]
        fast, slow, _ = runs(chains, [1, 2, 3])
        drawn.clear()
        for _ in range(5):
            scores = lm_like(3, 4096, generator)
            assert fast.select(ids, scores).tolist() == slow.select(ids, scores).tolist()
        assert drawn == [3] * 4  # every step after the first (dense, verified)


@needs_kernel
def test_the_kernel_finds_each_rows_own_k_candidates():
    """Each row's candidates are its own k largest in token-id order, the places past its k -inf."""
    generator = torch.Generator().manual_seed(6)
    scores = lm_like(4, 5000, generator)
    ks = torch.tensor([1, 7, 50, 100])
    kernel = native.Kernel(native.library(), [])
    assert kernel.candidates(scores, 100, torch.ones(4), ks) == -1
    for r, k in enumerate(ks.tolist()):
        want = scores[r].topk(k).indices.sort().values
        assert torch.equal(kernel.ids[r, :k], want)
        assert torch.equal(kernel.values[r, :k], scores[r, want])
        assert bool((kernel.values[r, k:] == float("-inf")).all())


def nucleus_chain(temperature: float, p: float, presence: float | None, min_p: float | None = None) -> Chain:
    """A client's chain without top_k: top-p over the whole vocabulary."""
    specs: list = [("presence_penalty", {"penalty": presence})] if presence is not None else []
    specs += [("temperature", {"value": temperature}), ("top_p", {"p": p})]
    specs += [("min_p", {"p": min_p})] if min_p is not None else []
    return Chain.from_names(*specs, "multinomial")


@needs_kernel
@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), vocab=st.sampled_from([50, 300, 4096]), data=st.data(),
       presence=st.sampled_from([None, 0.5]), min_p=st.sampled_from([None, 0.05]),
       scale=st.sampled_from([0.3, 1.0, 3.0]), rounded=st.booleans())
def test_chains_without_top_k_draw_the_dense_paths_tokens_on_the_nucleus_kernel(seed, vocab, data, presence, min_p,
                                                                                 scale, rounded):
    """Invariant: rows whose chain has top-p but no top-k, each with its own temperature and p
    (flat and peaked rows, ties, penalties before, min-p after), draw on the kernel, step after
    step, the tokens the dense path draws from the same seeds."""
    rows = data.draw(st.integers(1, 6), label="rows")
    chains = [nucleus_chain(data.draw(st.sampled_from([0.3, 0.8, 1.3])), data.draw(st.sampled_from([0.5, 0.9, 0.999])),
                            presence, min_p) for _ in range(rows)]
    seeds = list(range(seed, seed + rows))
    fast = chains[0].start(rows, seeds=seeds, row_chains=chains)
    dense = Chain(chains[0].processors, fast_paths=False).start(
        rows, seeds=seeds, row_chains=[Chain(c.processors, fast_paths=False) for c in chains])
    assert isinstance(fast.active_strategy, native.NativeNucleus)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, 6), generator=generator)
    for _ in range(4):
        scores = lm_like(rows, vocab, generator) * scale
        if rounded:
            scores = scores.round()
        drawn = [run.select(ids, scores.clone()) for run in (fast, dense)]
        assert drawn[0].tolist() == drawn[1].tolist()
        ids = torch.cat([ids, drawn[0][:, None]], dim=-1)


@needs_kernel
def test_the_nucleus_threshold_is_top_ps_own():
    """nucleus_threshold keeps exactly the values TopP.process keeps, for flat and peaked rows."""
    from samplekit.processors import TopP

    generator = torch.Generator().manual_seed(8)
    for scale in (0.1, 1.0, 5.0):
        row = lm_like(1, 4096, generator) * scale
        for p in (0.3, 0.9, 0.999):
            theta = native.nucleus_threshold(row[0], 1.0 - p)
            kept = torch.isfinite(TopP(p=p).process(None, row, None))[0]
            assert torch.equal(kept, row[0] >= theta)


@needs_kernel
def test_the_nucleus_kernel_keeps_top_ps_tokens_row_by_row():
    """Each row's kept tokens (found without sorting, by tries or by mass, or by the threshold
    for a close call) are exactly those TopP.process keeps, in token-id order."""
    from samplekit.processors import TopP

    generator = torch.Generator().manual_seed(9)
    kernel = native.Kernel(native.library(), [])
    for scale in (0.2, 1.0, 4.0):
        scores = lm_like(6, 4096, generator) * scale
        ps = [0.5, 0.8, 0.9, 0.95, 0.99, 0.999]
        temperatures = torch.tensor([0.7, 1.0, 1.3, 0.4, 1.0, 0.9])
        assert kernel.nucleus(scores, temperatures, torch.tensor([1.0 - p for p in ps], dtype=torch.float64)) == -1
        for r, p in enumerate(ps):
            divided = scores[r:r + 1] / temperatures[r]
            want = torch.isfinite(TopP(p=p).process(None, divided, None))[0].nonzero().view(-1)
            n = int(kernel.ks[r])
            assert torch.equal(kernel.ids[r, :n], want)
            assert torch.equal(kernel.values[r, :n], divided[0, want])
