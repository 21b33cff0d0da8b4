"""Property tests of the issue-2 built-ins (temperature, top_k, greedy, multinomial, context_window)
and of the Chain around them. Each test's name states its invariant."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit import ConfigError, GenerationError, Processor, ProcessorContractError
from samplekit.chain import Chain
from samplekit.processor import default_context
from samplekit.processors.context import ContextWindow
from samplekit.processors.selectors import Greedy, Multinomial
from samplekit.processors.temperature import Temperature
from samplekit.processors.top_k import TopK
from samplekit.testing import logits, token_histories

FAST = settings(max_examples=40, deadline=None)
NEG_INF = float("-inf")

LOGITS_PROCESSORS = [
    pytest.param(lambda: Temperature(value=0.7), id="temperature-0.7"),
    pytest.param(lambda: Temperature(value=0.0), id="temperature-0"),
    pytest.param(lambda: Temperature(value=3.0), id="temperature-3"),
    pytest.param(lambda: TopK(k=1), id="top_k-1"),
    pytest.param(lambda: TopK(k=4), id="top_k-4"),
]
dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])


def _apply(p, scores, ids=None):
    ids = torch.zeros(scores.shape[0], 1, dtype=torch.long) if ids is None else ids
    ctx = default_context(scores.shape[0], torch.Generator().manual_seed(0))
    ctx.state = p.start(scores.shape[0], ctx)
    return p.process(ids, scores, ctx)


@pytest.mark.parametrize("make", LOGITS_PROCESSORS)
@FAST
@given(scores=logits(dtype=dtypes))
def test_logits_processors_keep_shape_dtype_device_and_add_no_nan(make, scores):
    out = _apply(make(), scores)
    assert (out.shape, out.dtype, out.device) == (scores.shape, scores.dtype, scores.device)
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("make", LOGITS_PROCESSORS)
@FAST
@given(scores=logits(batch=(2, 5)))
def test_logits_processors_treat_rows_independently(make, scores):
    p = make()
    out = _apply(p, scores)
    for i in range(scores.shape[0]):
        assert torch.equal(_apply(p, scores[i:i + 1]), out[i:i + 1])


@FAST
@given(scores=logits(), t=st.floats(0.05, 20.0))
def test_temperature_above_zero_keeps_each_rows_argmax_and_order(scores, t):
    out = _apply(Temperature(value=t), scores)
    # Order kept up to ties: a strictly smaller logit never ends up strictly larger.
    smaller = scores[:, :, None] < scores[:, None, :]  # (B, V, V)
    assert not (smaller & (out[:, :, None] > out[:, None, :])).any()
    at_max = scores == scores.amax(-1, keepdim=True)
    assert (out[at_max.nonzero(as_tuple=True)] == out.amax(-1).repeat_interleave(at_max.sum(-1))).all()


@FAST
@given(scores=logits())
def test_temperature_zero_leaves_only_the_row_maxima_finite(scores):
    out = _apply(Temperature(value=0.0), scores)
    at_max = scores == scores.amax(-1, keepdim=True)
    assert torch.equal(~torch.isneginf(out), at_max)
    assert torch.equal(out[at_max], scores[at_max])


@FAST
@given(scores=logits(vocab=(1, 30)), k=st.integers(1, 35))
def test_top_k_keeps_at_least_min_k_finite_and_at_most_k_plus_ties(scores, k):
    out = _apply(TopK(k=k), scores)
    finite_in = (~torch.isneginf(scores)).sum(-1)
    finite_out = (~torch.isneginf(out)).sum(-1)
    assert (finite_out >= torch.clamp(finite_in, max=k)).all()
    kth = scores.topk(min(k, scores.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
    ties_below_kth = ((scores == kth).sum(-1) - 1).clamp(min=0)
    assert (finite_out <= k + ties_below_kth).all()
    assert ((out == scores) | torch.isneginf(out)).all()  # a filter: kept values unchanged


@FAST
@given(scores=logits(), k=st.integers(1, 10))
def test_top_k_is_idempotent(scores, k):
    once = _apply(TopK(k=k), scores)
    assert torch.equal(_apply(TopK(k=k), once), once)


@FAST
@given(scores=logits(vocab=(1, 20)), extra=st.integers(0, 5))
def test_top_k_at_least_the_vocabulary_size_is_a_no_op(scores, extra):
    assert torch.equal(_apply(TopK(k=scores.shape[-1] + extra), scores), scores)


@FAST
@given(scores=logits(dtype=dtypes))
def test_greedy_equals_argmax_lowest_id_among_ties(scores):
    picked = Greedy()(None, scores)
    first_max = (scores == scores.amax(-1, keepdim=True)).int().argmax(-1)  # first True per row
    assert torch.equal(picked, first_max)


@FAST
@given(scores=logits(batch=(1, 6)), seed=st.integers(0, 2**32 - 1))
def test_multinomial_never_picks_a_neginf_token(scores, seed):
    picked = Chain([Multinomial()]).select(None, scores, generator=torch.Generator().manual_seed(seed))
    assert not torch.isneginf(scores.gather(-1, picked[:, None])).any()


@FAST
@given(scores=logits(batch=(1, 4)), ids=token_histories(batch=1), seeds=st.lists(st.integers(0, 99), min_size=4,
                                                                                  max_size=4))
def test_a_seeded_chain_reproduces_its_tokens_exactly(scores, ids, seeds):
    chain = Chain([Temperature(value=0.8), TopK(k=5), Multinomial()])
    b = scores.shape[0]
    ids = ids.expand(b, -1)

    def run():
        r = chain.start(b, seeds=seeds[:b])
        return [r.select(ids, scores.roll(s, -1)) for s in range(4)]

    assert all(torch.equal(x, y) for x, y in zip(run(), run()))


def test_multinomial_frequencies_match_softmax_within_a_chi_square_bound():
    scores = torch.tensor([[2.0, 1.0, 0.5, NEG_INF, 0.0, -1.0]])
    n = 20000
    picked = Chain([Multinomial()]).select(None, scores.expand(n, -1), generator=torch.Generator().manual_seed(7))
    observed = torch.bincount(picked, minlength=6).double()
    expected = torch.softmax(scores[0].double(), -1) * n
    assert observed[3] == 0
    live = expected > 0
    chi2 = (((observed - expected)[live]) ** 2 / expected[live]).sum().item()
    assert chi2 < 20.5, f"chi-square {chi2:.1f} with 4 degrees of freedom (p < 0.0004); observed {observed.tolist()}"


@FAST
@given(ids=token_histories(batch=(1, 3), length=(0, 20)), n=st.integers(1, 25))
def test_context_window_keeps_exactly_the_last_context_length_tokens(ids, n):
    out = ContextWindow(context_length=n)(ids)
    keep = min(n, ids.shape[1])
    assert out.shape == (ids.shape[0], keep)
    assert torch.equal(out, ids[:, ids.shape[1] - keep:])


def test_context_window_without_a_length_uses_the_models_context_length():
    ids = torch.arange(10)[None]
    ctx = default_context(1, context_length=4)
    assert torch.equal(ContextWindow().crop(ids, ctx), ids[:, -4:])


def test_chain_without_a_selector_is_rejected():
    with pytest.raises(ConfigError, match="no selector"):
        Chain([Temperature(value=0.7), TopK(k=3)])


def test_chain_with_the_selector_not_last_is_rejected():
    with pytest.raises(ConfigError, match="exactly one selector and it is last"):
        Chain([Greedy(), TopK(k=3)])


class _WritesInput(Processor):
    """Sets column 0 to -inf in place."""

    name = "writes_input"

    def process(self, input_ids, scores, ctx):
        scores[:, 0] = NEG_INF
        return scores.clone()


def test_checked_chain_catches_a_processor_writing_its_input():
    chain = Chain([TopK(k=3), _WritesInput(), Greedy()], checked=True)
    with pytest.raises(ProcessorContractError, match="'writes_input' wrote its input"):
        chain.select(None, torch.tensor([[5.0, 1.0, 2.0, 3.0], [4.0, 3.0, 0.0, 1.0]]))  # column 0 in the top 3


def test_an_all_neginf_row_raises_generation_error_naming_the_step_and_processors():
    chain = Chain([Temperature(value=0.5), TopK(k=2), Greedy()])
    run = chain.start(2)
    scores = torch.randn(2, 5)
    run.select(None, scores)  # step 0 is fine
    scores[1] = NEG_INF
    with pytest.raises(GenerationError, match=r"step 1: .*row\(s\) \[1\].*temperature -> top_k -> greedy"):
        run.select(None, scores)
