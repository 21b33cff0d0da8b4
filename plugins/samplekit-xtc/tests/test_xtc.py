"""samplekit-xtc: the conformance kit, the reference semantics, and discovery through its entry point."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.processor import RowRandom, default_context
from samplekit.testing import check_processor
from samplekit_xtc import XTC

NEG_INF = float("-inf")


def _apply(p, scores, seed=0):
    return p(None, scores, default_context(scores.shape[0], torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("params", [{}, {"threshold": 0.5, "probability": 1.0},
                                    {"threshold": 0.05, "probability": 0.3}])
def test_xtc_conforms(params):
    check_processor(XTC, params=params, examples=30)


def test_xtc_is_listed_with_its_distribution_and_version():
    from samplekit.plugins import PluginHost

    entry = PluginHost(autoload=True).build_registry().get("xtc")
    assert entry.cls is XTC
    provider = entry.provider
    assert (provider.distribution, provider.version, provider.builtin) == ("samplekit-xtc", "0.1.0", False)


def test_xtc_removes_every_token_above_the_threshold_but_the_least_likely():
    scores = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    out = XTC(threshold=0.1, probability=1.0)(None, scores)
    assert torch.isneginf(out).tolist() == [[False, True, False, True]]
    assert out[0, 0] == scores[0, 0] and out[0, 2] == scores[0, 2]


def test_xtc_does_nothing_with_fewer_than_two_tokens_above_the_threshold():
    scores = torch.log(torch.tensor([[0.9, 0.04, 0.03, 0.03]]))
    assert torch.equal(XTC(threshold=0.1, probability=1.0)(None, scores), scores)


def test_xtc_keeps_every_token_tied_at_the_least_likely_candidate():
    scores = torch.log(torch.tensor([[0.4, 0.2, 0.2, 0.2]]))
    out = XTC(threshold=0.1, probability=1.0)(None, scores)
    assert torch.isneginf(out).tolist() == [[True, False, False, False]]


def test_xtc_with_probability_zero_is_a_no_op():
    scores = torch.randn(4, 10)
    assert torch.equal(XTC(probability=0.0)(None, scores), scores)


def test_xtc_applies_in_about_probability_of_the_rows():
    n = 4000
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(n, -1)
    ctx = default_context(n)
    ctx.random = RowRandom.from_seeds(range(n))
    applied = torch.isneginf(XTC(threshold=0.1, probability=0.3)(None, scores, ctx)).any(-1).double().mean()
    assert abs(applied.item() - 0.3) < 0.03


def _llama_cpp_xtc(probs: list[float], threshold: float) -> set[int]:
    """The token ids llama.cpp keeps when XTC fires (probs without ties)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    pos_last = 0
    for rank, i in enumerate(order):
        if probs[i] >= threshold:
            pos_last = rank
        else:
            break
    return set(order[pos_last:]) if pos_last > 0 else set(order)


@settings(max_examples=60, deadline=None)
@given(logit_values=st.lists(st.floats(-5, 5), min_size=2, max_size=12, unique=True),
       threshold=st.floats(0.01, 0.5))
def test_xtc_keeps_what_llama_cpp_keeps_when_it_fires(logit_values, threshold):
    scores = torch.tensor([logit_values])
    probs = torch.softmax(scores, -1)[0].tolist()
    # No ties and no probability on the threshold: there float rounding decides.
    assume(len(set(probs)) == len(probs) and all(abs(p - threshold) > 1e-6 for p in probs))
    out = XTC(threshold=threshold, probability=1.0)(None, scores)
    kept = set((~torch.isneginf(out[0])).nonzero().flatten().tolist())
    assert kept == _llama_cpp_xtc(probs, threshold)


def test_xtc_in_a_seeded_chain_reproduces_its_tokens():
    chain = Chain.from_names(("xtc", {"threshold": 0.1, "probability": 0.5}), "multinomial")
    scores = torch.randn(3, 20)
    first = chain.start(3, seeds=[1, 2, 3])
    second = chain.start(3, seeds=[1, 2, 3])
    assert all(torch.equal(first.select(None, scores), second.select(None, scores)) for _ in range(5))
