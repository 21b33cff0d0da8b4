"""The kernel runs the processors after the top-k (top-p, min-p, temperature) and draws the
tensor path's tokens, each row with its own values; chains it cannot run wholly keep the tensor
path's tokens too."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import samplekit_native as native
from samplekit import Chain, Param, Processor, inverse_cdf_sample
from samplekit.processor import default_context
from samplekit.processors import MinP, Temperature, TopP
from samplekit.strategies.top_k import TopKCandidates, plan

needs_kernel = pytest.mark.skipif(native.library() is None,
                                  reason="the C kernel cannot be built here (no C compiler, or SAMPLEKIT_NATIVE=0)")
LLAMA = (("top_k", {"k": 40}), ("top_p", {"p": 0.95}), ("min_p", {"p": 0.05}), ("temperature", {"value": 0.8}),
         "multinomial")
OPS = {"divides_logits_by": Temperature, "nucleus_p": TopP, "min_p_ratio": MinP}
MARGIN = 1e-5


def lm_like(rows: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """Zipf-like logits by rank plus noise (each row its own order): nuclei fall where a model's do."""
    ranks = torch.argsort(torch.rand(rows, vocab, generator=generator), dim=-1).float()
    return -1.3 * torch.log1p(ranks) + 0.5 * torch.randn(rows, vocab, generator=generator)


def reference_row(values: torch.Tensor, program: list[tuple[str, float]]) -> tuple[torch.Tensor, float]:
    """One row's candidates ``[1, k]`` through the built-in processors in tensor operations, and
    how close any top-p running sum came to its cut (inf when no top-p ran)."""
    closest = math.inf
    for promise, value in program:
        processor = OPS[promise](**({"value": value} if promise == "divides_logits_by" else {"p": value}))
        if promise == "nucleus_p" and value < 1.0:
            cumulative = values.sort(dim=-1).values.softmax(dim=-1).cumsum(dim=-1)
            closest = min(closest, (cumulative - (1.0 - value)).abs().min().item())
        values = processor.process(None, values, default_context(1))
    return values, closest


VALUES = {"divides_logits_by": [1.0, 0.8, 0.35, 1.7], "nucleus_p": [1.0, 0.95, 0.5, 0.1],
          "min_p_ratio": [0.0, 0.05, 0.3, 1.0]}  # the neutral value first


@needs_kernel
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 4), vocab=st.sampled_from([60, 700, 5000]),
       k=st.integers(1, 60), kinds=st.lists(st.sampled_from(sorted(OPS)), max_size=4), data=st.data(),
       rounded=st.booleans(), masked=st.booleans())
def test_the_kernels_filters_draw_the_tensor_paths_tokens_row_by_row(seed, rows, vocab, k, kinds, data, rounded,
                                                                     masked):
    """Invariant: for any program of temperature / top-p / min-p after the top-k, each row with its
    own values, the kernel draws the token the built-in processors' tensor path draws for the same
    uniform, unless a decision lies within rounding (a top-p running sum or ``u * total`` within
    1e-5 of a step: C's expf and torch's vectorised exp may differ in the last bit)."""
    k = min(k, vocab - 1)
    generator = torch.Generator().manual_seed(seed)
    scores = lm_like(rows, vocab, generator) * 3
    if rounded:
        scores = scores.round()  # ties in the nucleus and across the min-p threshold
    if masked:
        scores[0, : vocab - 2] = float("-inf")  # a row with fewer finite scores than k
    programs = [[(kind, data.draw(st.sampled_from(VALUES[kind]), label=f"row {r} {kind}")) for kind in kinds]
                for r in range(rows)]
    u = torch.rand(rows, 1, generator=generator)
    kernel = native.Kernel(native.library(), [native.OPS[kind][0] for kind in kinds])
    found = kernel.candidates(scores, k, torch.ones(rows))
    values, indices = scores.topk(k + 1, dim=-1)
    if found >= 0:  # the kernel falls back exactly on a tie across the k-th place
        assert found % 2 == 0 and any(a == b and a != float("-inf") for a, b in values[:, k - 1:k + 1].tolist())
        return
    params = torch.tensor([[native.OPS[kind][1](programs[r][o][1]) for r in range(rows)]
                           for o, kind in enumerate(kinds)] or [[0.0] * rows], dtype=torch.float32)
    assert kernel.filter(params) == -1
    tokens = kernel.draw(u)
    indices, order = indices[:, :k].sort(dim=-1)
    candidates = values.gather(-1, order)
    finite = torch.isfinite(candidates)  # which -inf scores fill a short row is immaterial: they weigh 0
    assert torch.equal(kernel.ids[finite], indices[finite])
    for r in range(rows):
        want, closest = reference_row(candidates[r:r + 1], programs[r])
        assert torch.equal(torch.isfinite(kernel.values[r]), torch.isfinite(want[0])) or closest <= MARGIN
        expected = indices[r, inverse_cdf_sample(want, u[r:r + 1]).item()].item()
        if tokens[r].item() != expected:
            cdf = (want - want.amax()).exp().cumsum(-1)[0]
            target = u[r].item() * cdf[-1].item()
            steps = [cdf[(indices[r] == t).nonzero().item()].item() for t in (tokens[r].item(), expected)]
            assert closest <= MARGIN or min(abs(s - target) for s in steps) <= MARGIN * cdf[-1].item()


def _tensor_run(chain: Chain, rows: int, seeds, row_chains=None):
    """A run of ``chain`` on samplekit's own tensor strategy (the plugin bypassed)."""
    run = chain.start(rows, seeds=seeds, row_chains=row_chains)
    run.strategy = TopKCandidates(*plan(chain))
    run._follow_values()
    return run


def _row_chain(temperature: float, p: float, min_p: float, k: int = 40) -> Chain:
    return Chain.from_names(("top_k", {"k": k}), ("top_p", {"p": p}), ("min_p", {"p": min_p}),
                            ("temperature", {"value": temperature}), "multinomial")


@needs_kernel
@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 5), vocab=st.sampled_from([2000, 50257]),
       own=st.lists(st.tuples(st.sampled_from([0.8, 0.3, 1.4, 1.0]), st.sampled_from([0.95, 0.6, 1.0]),
                              st.sampled_from([0.05, 0.0, 0.2])), min_size=5, max_size=5))
def test_a_run_with_per_row_values_draws_the_tensor_strategys_tokens_on_the_kernel(seed, rows, vocab, own):
    """Invariant: llama.cpp's default chain, each row with its own temperature, top-p and min-p,
    draws on the kernel the tokens samplekit's tensor strategy and the dense path (every processor
    on the whole vocabulary) draw from the same seeds."""
    chains = [_row_chain(*own[r]) for r in range(rows)]
    base = _row_chain(0.8, 0.95, 0.05)
    generator = torch.Generator().manual_seed(seed)
    scores = [lm_like(rows, vocab, generator) for _ in range(4)]
    ids = torch.zeros(rows, 1, dtype=torch.long)
    seeds = list(range(seed, seed + rows))
    fast = base.start(rows, seeds=seeds, row_chains=chains)
    slow = _tensor_run(base, rows, seeds, chains)
    dense = Chain(base.processors, fast_paths=False).start(
        rows, seeds=seeds, row_chains=[Chain(c.processors, fast_paths=False) for c in chains])
    assert isinstance(fast.active_strategy, native.NativeCandidates)
    drawn = [fast.select(ids, s).tolist() for s in scores]
    assert drawn == [slow.select(ids, s).tolist() for s in scores] == [dense.select(ids, s).tolist() for s in scores]


@needs_kernel
def test_llama_cpps_default_chain_draws_on_the_kernel(monkeypatch):
    drawn = []
    original = native.Kernel.draw
    monkeypatch.setattr(native.Kernel, "draw", lambda self, u: drawn.append(1) or original(self, u))
    chain = Chain.from_names(*LLAMA)
    generator = torch.Generator().manual_seed(3)
    scores = [lm_like(3, 50257, generator) for _ in range(6)]
    ids = torch.zeros(3, 1, dtype=torch.long)
    fast, slow = chain.start(3, seeds=[1, 2, 3]), _tensor_run(chain, 3, [1, 2, 3])
    assert fast.strategy.name == "top-k candidates (C kernel)"
    assert [fast.select(ids, s).tolist() for s in scores] == [slow.select(ids, s).tolist() for s in scores]
    assert len(drawn) == 5  # every step after the first (dense, verified)


@needs_kernel
def test_rows_with_their_own_k_or_a_zero_temperature_keep_to_the_tensor_strategys_tokens():
    generator = torch.Generator().manual_seed(4)
    scores = [lm_like(3, 3000, generator) for _ in range(5)]
    ids = torch.zeros(3, 1, dtype=torch.long)
    base = _row_chain(0.8, 0.95, 0.05)
    for chains in ([_row_chain(0.8, 0.95, 0.05, k=k) for k in (10, 40, 80)],
                   [_row_chain(t, 0.95, 0.05) for t in (0.8, 0.0, 1.2)]):
        fast = base.start(3, seeds=[7, 8, 9], row_chains=chains)
        slow = _tensor_run(base, 3, [7, 8, 9], chains)
        assert [fast.select(ids, s).tolist() for s in scores] == [slow.select(ids, s).tolist() for s in scores]


@needs_kernel
def test_a_processor_the_kernel_does_not_run_works_on_the_kernels_candidates():
    """top_n_sigma after the top-k: the kernel finds the candidates, tensors finish the step."""
    chain = Chain.from_names(("top_k", {"k": 30}), ("top_n_sigma", {"n": 1.5}), "multinomial")
    generator = torch.Generator().manual_seed(5)
    scores = [lm_like(2, 4000, generator) * 2 for _ in range(6)]
    ids = torch.zeros(2, 1, dtype=torch.long)
    fast, slow = chain.start(2, seeds=[3, 4]), _tensor_run(chain, 2, [3, 4])
    assert fast.strategy.name == "top-k candidates (C kernel, tensor suffix)"
    assert [fast.select(ids, s).tolist() for s in scores] == [slow.select(ids, s).tolist() for s in scores]


class Nucleus(Processor):
    """A plugin's own top-p declaring nucleus_p, with a p other than the one it filters with."""

    name = "nucleus_liar"
    params = (Param("p", "float", 0.9, "mass", low=0.0, high=1.0, low_open=True),)
    keeps_argmax = is_filter = vocab_symmetric = candidate_safe = True

    def nucleus_p(self):
        return self.p / 2

    def process(self, input_ids, scores, ctx):
        return TopP(p=self.p).process(input_ids, scores, ctx)


def test_the_conformance_kit_checks_the_filter_promises_the_kernel_reads():
    from samplekit.testing import ConformanceFailure, check_processor

    for p in (TopP(p=0.9), MinP(p=0.1), TopP(p=0.9, min_tokens_to_keep=3)):
        check_processor(p)
    assert TopP(p=0.9, min_tokens_to_keep=3).nucleus_p() is None  # a promise it does not make
    with pytest.raises(ConformanceFailure, match="nucleus_p"):
        check_processor(Nucleus(p=0.9))


@needs_kernel
@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), temperatures=st.lists(st.sampled_from([0.8, 0.3, 1.0, 1.5]), min_size=1,
                                                         max_size=6))
def test_the_balanced_chain_with_per_row_temperatures_draws_the_dense_paths_tokens(seed, temperatures):
    """Invariant: temperature -> top_k 50 -> multinomial, each row with its own temperature, draws
    on the kernel what the dense path draws from the same seeds."""
    rows = len(temperatures)
    make = lambda t, fast=True: Chain.from_names(("temperature", {"value": t}), ("top_k", {"k": 50}),  # noqa: E731
                                                 "multinomial", fast_paths=fast)
    generator = torch.Generator().manual_seed(seed)
    scores = [lm_like(rows, 50257, generator) for _ in range(4)]
    ids = torch.zeros(rows, 1, dtype=torch.long)
    seeds = list(range(seed, seed + rows))
    fast = make(0.8).start(rows, seeds=seeds, row_chains=[make(t) for t in temperatures])
    dense = make(0.8, False).start(rows, seeds=seeds, row_chains=[make(t, False) for t in temperatures])
    assert isinstance(fast.active_strategy, native.NativeCandidates)
    assert [fast.select(ids, s).tolist() for s in scores] == [dense.select(ids, s).tolist() for s in scores]
