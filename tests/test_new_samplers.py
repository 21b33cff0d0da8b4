"""The newest truncation and reshaping samplers: p-less, p-less-norm, Top-H and quadratic smoothing.

Each is checked by the conformance kit, by hypothesis properties that name their invariant, and
against its peer's own output on the same logits (transformers' warper where one exists, else the
peer's published code, transcribed here with its source)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.config import chain_from_config
from samplekit.errors import ConfigError, ParameterError
from samplekit.processors.p_less import PLess, PLessNorm
from samplekit.processors.selectors import Multinomial
from samplekit.processors.smoothing import Smoothing
from samplekit.processors.top_h import TopH
from samplekit.testing import check_processor, logits

NEG_INF = float("-inf")
FAST = settings(max_examples=60, deadline=None)

CONFORMANCE = [
    ("p_less", {}),
    ("p_less_norm", {}),
    ("top_h", {"top_h": 0.5}),
    ("top_h", {"top_h": 0.9, "top_n": 5}),
    ("smoothing", {"factor": 0.7, "curve": 2.0}),
    ("smoothing", {"factor": 3.0, "curve": 6.0}),
]


@pytest.mark.parametrize(("name", "params"), CONFORMANCE, ids=[f"{n}-{p}" for n, p in CONFORMANCE])
def test_new_sampler_passes_the_conformance_kit(name, params):
    check_processor(name, params=params, examples=30)


def _apply(p, scores, ctx=None):
    return p(torch.zeros(scores.shape[0], 1, dtype=torch.long), scores, ctx)


@st.composite
def continuous_logits(draw, vocab=(1, 300), batch=(1, 4), neginf=True):
    """Logits without ties (seeded normal draws), a few -inf, at several scales."""
    b, v = draw(st.integers(*batch)), draw(st.integers(*vocab))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scores = torch.randn(b, v, generator=g) * draw(st.sampled_from([0.1, 1.0, 3.0, 10.0]))
    if neginf and v > 1 and draw(st.booleans()):
        scores[torch.rand(b, v, generator=g) < 0.3] = NEG_INF
        scores[:, 0] = scores[:, 0].nan_to_num(neginf=0.0)  # every row keeps a finite logit
    return scores


# -- p-less and p-less-norm -------------------------------------------------------------------------
def _kept_distribution(out: torch.Tensor) -> list[float]:
    """The renormalised probabilities of the kept tokens, in token order (as llama.cpp's test reads them)."""
    probs = out.softmax(dim=-1)[0]
    return [float(x) for x in probs[torch.isfinite(out[0])]]


# Vectors from llama.cpp's p-less pull request (ggml-org/llama.cpp#26035, tests/test-sampling.cpp at
# commit 07e4038f07a83cd729bbac700e6681757b313b73:
# ``test_p_less({0.1f, 0.15f, 0.2f, 0.25f, 0.3f}, {0.45454545f, 0.54545455f})`` and the uniform case),
# checked to 1e-5 as that test does.
P_LESS_LLAMA_CPP = [
    ([0.1, 0.15, 0.2, 0.25, 0.3], [0.45454545, 0.54545455]),  # threshold 0.225 keeps 0.25 and 0.30
    ([0.2, 0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]),  # threshold 0.20: a uniform row keeps all
]


@pytest.mark.parametrize(("probs", "expected"), P_LESS_LLAMA_CPP)
def test_p_less_matches_llama_cpp_pull_request_vectors(probs, expected):
    out = _apply(PLess(), torch.tensor([probs]).log())
    assert _kept_distribution(out) == pytest.approx(expected, abs=1e-5)


def _authors_threshold(probs: torch.Tensor, norm: bool) -> torch.Tensor:
    """The authors' reference (github.com/ryttry/p-less-sampling, p_less_samplers.py:
    ``p_less_decode`` / ``p_less_norm_decode``): a token is dropped iff ``probs < p`` with
    ``p = sum(probs^2)``, or ``(v * sum(probs^2) - 1) / (v - 1)`` for the norm variant."""
    p = probs.square().sum(dim=-1, keepdim=True)
    if norm:
        v = probs.size(-1)
        p = (v * p - 1.0) / (v - 1.0)
    return p


@pytest.mark.parametrize("norm", [False, True], ids=["p_less", "p_less_norm"])
@FAST
@given(scores=continuous_logits(vocab=(2, 300)))
def test_p_less_keeps_exactly_the_tokens_the_authors_reference_keeps(norm, scores):
    """Away from rounding at the threshold, the kept set is the authors' ``probs >= threshold``."""
    probs = scores.double().softmax(dim=-1)
    threshold = _authors_threshold(probs, norm)
    out = _apply(PLessNorm() if norm else PLess(), scores)
    decided = (probs - threshold).abs() > 1e-9  # tokens not within rounding of the cut
    expected = (probs >= threshold) & torch.isfinite(scores)
    assert torch.equal(torch.isfinite(out)[decided], expected[decided])
    assert torch.equal(out[torch.isfinite(out)], scores[torch.isfinite(out)])  # kept logits unchanged


@FAST
@given(scores=logits(batch=(1, 4), vocab=(1, 64)))
def test_p_less_norm_keeps_every_token_p_less_keeps(scores):
    """The norm threshold (V S - 1) / (V - 1) never exceeds S = sum(p^2)."""
    strict, relaxed = _apply(PLess(), scores), _apply(PLessNorm(), scores)
    assert not (torch.isfinite(strict) & ~torch.isfinite(relaxed)).any()


@FAST
@given(scores=logits(batch=(1, 4), vocab=(1, 64)))
def test_p_less_keeps_every_maximum_even_for_near_uniform_rows(scores):
    """sum(p^2) <= max(p): the row's maxima stay, whatever float rounding does to the sum."""
    for p in (PLess(), PLessNorm()):
        out = _apply(p, scores)
        at_max = scores == scores.amax(dim=-1, keepdim=True)
        assert torch.equal(out[at_max], scores[at_max])


@pytest.mark.parametrize("v", [2, 3, 7, 1000, 50257])
def test_p_less_keeps_a_uniform_row_whole(v):
    scores = torch.zeros(1, v)
    assert torch.equal(_apply(PLess(), scores), scores) and torch.equal(_apply(PLessNorm(), scores), scores)


def test_p_less_sharper_rows_keep_fewer_tokens():
    """The paper's point: the threshold adapts, keeping few tokens at low temperature, many at high."""
    base = torch.linspace(0.0, -6.0, 100)[None]
    kept = [int(torch.isfinite(_apply(PLess(), base / t)).sum()) for t in (0.5, 1.0, 2.0, 4.0)]
    assert kept == sorted(kept) and kept[0] < kept[-1]


# -- Top-H ---------------------------------------------------------------------------------------------
def _transformers_top_h():
    module = pytest.importorskip("transformers.generation.logits_process")
    if not hasattr(module, "TopHLogitsWarper"):
        pytest.skip("this transformers has no TopHLogitsWarper (added in 4.57)")
    return module.TopHLogitsWarper


@settings(max_examples=80, deadline=None)
@given(scores=continuous_logits(vocab=(1, 300)), top_h=st.floats(0.01, 1.0))
def test_top_h_equals_transformers_warper_on_the_same_logits(scores, top_h):
    """Without ties at the cut (continuous draws), samplekit's output is transformers' exactly."""
    warper = _transformers_top_h()(top_h=top_h)
    ids = torch.zeros(scores.shape[0], 1, dtype=torch.long)
    assert torch.equal(_apply(TopH(top_h=top_h), scores), warper(ids, scores.clone()))


def test_top_h_parameters_are_transformers_names_and_cap():
    assert [p.name for p in TopH.params] == ["top_h", "top_n"]
    assert TopH().top_n == 100 == _transformers_top_h()(top_h=0.5).top_n


@FAST
@given(scores=logits(batch=(1, 3), vocab=(1, 120)), low=st.floats(0.05, 1.0), high=st.floats(0.05, 1.0))
def test_top_h_larger_bound_keeps_a_superset(scores, low, high):
    """tau = top_h * H grows with top_h, and the kept tokens are a prefix of the sorted row."""
    low, high = min(low, high), max(low, high)
    fewer, more = _apply(TopH(top_h=low), scores), _apply(TopH(top_h=high), scores)
    assert not (torch.isfinite(fewer) & ~torch.isfinite(more)).any()


def test_top_h_keeps_tokens_tied_at_the_cut_together():
    scores = torch.tensor([[2.0, 1.0, 1.0, 1.0, -3.0]])
    out = _apply(TopH(top_h=0.5), scores)
    kept = torch.isfinite(out[0]).tolist()
    assert kept[1] == kept[2] == kept[3]


# -- quadratic smoothing ---------------------------------------------------------------------------
def _webui_quadratic(scores: torch.Tensor, smoothing_factor: float, smoothing_curve: float) -> torch.Tensor:
    """text-generation-webui, modules/sampler_hijack.py, ``QuadraticSamplingLogitsWarper.__call__``
    (koboldcpp's sample_quadratic computes the same curve in float32, row by row)."""
    max_logit = scores.max()
    diff = scores - max_logit
    k = (3 - smoothing_curve) / 2
    s = (smoothing_curve - 1) / 2
    return torch.where(scores != float("-inf"),
                       -(k * smoothing_factor * diff**2) + (s * smoothing_factor * diff**3) + max_logit, scores)


@FAST
@given(scores=logits(batch=1, vocab=(1, 64), extremes=False), factor=st.floats(0.01, 10.0),
       curve=st.floats(1.0, 10.0))
def test_smoothing_equals_text_generation_webui_on_one_row(scores, factor, curve):
    """webui subtracts the batch's maximum, which at batch size 1 is the row's: the same numbers."""
    expected = _webui_quadratic(scores, factor, curve)
    assert torch.allclose(_apply(Smoothing(factor=factor, curve=curve), scores), expected, rtol=1e-6, atol=1e-5)


@FAST
@given(scores=logits(batch=(1, 4), vocab=(1, 64)), factor=st.floats(0.01, 10.0), curve=st.floats(1.0, 3.0))
def test_smoothing_with_curve_at_most_3_keeps_each_rows_order(scores, factor, curve):
    """For curve in [1, 3] the map d -> -k f d^2 + s f d^3 (d <= 0) is non-decreasing."""
    out = _apply(Smoothing(factor=factor, curve=curve), scores)
    order = scores.argsort(dim=-1)
    ranked = out.gather(-1, order)
    assert (ranked[:, 1:] >= ranked[:, :-1]).all()
    assert torch.equal(out.amax(dim=-1), scores.amax(dim=-1))  # the maximum's logit is unchanged


@FAST
@given(scores=logits(batch=(1, 4), vocab=(1, 64)))
def test_smoothing_factor_0_returns_the_scores_unchanged(scores):
    assert torch.equal(_apply(Smoothing(factor=0.0, curve=4.0), scores), scores)


# -- values per row ------------------------------------------------------------------------------------
PER_ROW = [
    (lambda v: TopH(top_h=v), [0.1, 0.5, 1.0, 0.5]),
    (lambda v: Smoothing(factor=v, curve=2.0), [0.0, 0.5, 4.0, 0.5]),
    (lambda v: Smoothing(factor=1.0, curve=v), [1.0, 2.5, 9.0, 1.0]),
]


@pytest.mark.parametrize(("make", "values"), PER_ROW, ids=["top_h", "smoothing-factor", "smoothing-curve"])
@settings(max_examples=25, deadline=None)
@given(scores=logits(batch=4, vocab=(2, 40)))
def test_a_row_with_its_own_value_gives_what_it_gives_alone(make, values, scores):
    """A shared run where each row carries its own value equals each row run alone with that value."""
    chains = [Chain([make(v), Multinomial()]) for v in values]
    base = chains[1]
    shared = base.start(4, seeds=[0, 1, 2, 3], row_chains=chains).process(None, scores)
    for r, chain in enumerate(chains):
        alone = chain.start(1, seeds=[r]).process(None, scores[r:r + 1])
        assert torch.equal(shared[r:r + 1], alone), (r, values[r])


# -- configuration ---------------------------------------------------------------------------------------
def test_new_samplers_build_from_a_config_with_their_bare_values():
    chain = chain_from_config({"chain": ["p_less", {"top_h": 0.3}, {"smoothing": 0.5}, "multinomial"]})
    assert [p.name for p in chain.processors] == ["p_less", "top_h", "smoothing", "multinomial"]
    assert (chain.processors[1].top_h, chain.processors[2].factor) == (0.3, 0.5)


@pytest.mark.parametrize(("entry", "message"), [
    ({"top_h": {"top_h": 0.0}}, r"chain\[0\]\.top_h\.top_h: 0\.0 is out of range; expected number in \(0, 1\]"),
    ({"smoothing": {"curve": 0.5}},
     r"chain\[0\]\.smoothing\.curve: 0\.5 is out of range; expected number in \[1, 10\]"),
])
def test_a_bad_value_names_the_parameter_and_the_allowed_range(entry, message):
    with pytest.raises((ConfigError, ParameterError), match=message):
        chain_from_config({"chain": [entry, "multinomial"]})

