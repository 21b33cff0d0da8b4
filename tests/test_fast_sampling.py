"""The candidate strategies (samplekit.strategies: sampling among the top-k survivors, or among
the candidates a filter finds) against the dense path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.errors import GenerationError
from samplekit.processor import RowRandom
from samplekit.processors.selectors import Greedy, Multinomial
from samplekit.selection import EmptyRowError, NonFiniteRowError, check_rows, inverse_cdf_sample

try:
    import samplekit_native as native
except ImportError:  # the optional plugin (plugins/samplekit-native) is not installed
    native = None


def _chain(specs, fast_paths: bool = True) -> Chain:
    return Chain.from_names(*specs, fast_paths=fast_paths)


@pytest.fixture(params=["tensors", "native"])
def kernel(request, monkeypatch):
    """Runs a test twice: on the candidate strategy's tensor operations and on the C kernel of
    the samplekit-native plugin (skipped where it is not installed or cannot be built)."""
    if request.param == "tensors":
        if native is not None:
            monkeypatch.setattr(native, "library", lambda: None)
    elif native is None or native.library() is None:
        pytest.skip("the samplekit-native plugin is not installed, or its C kernel cannot be built here")
    return request.param


@pytest.fixture
def candidate_steps(monkeypatch, kernel):
    """Counts the steps whose draw ran on the candidates (tensors or C kernel), any selector."""
    seen = []
    for selector in (Multinomial, Greedy):
        original = selector.select_candidates

        def counted(self, input_ids, values, indices, ctx, _original=original):
            seen.append(values.shape)
            return _original(self, input_ids, values, indices, ctx)

        monkeypatch.setattr(selector, "select_candidates", counted)
    if native is not None:
        original_draw = native.Kernel.draw

        def counted_draw(self, uniforms):
            seen.append(self.size[:2])
            return original_draw(self, uniforms)

        monkeypatch.setattr(native.Kernel, "draw", counted_draw)
    return seen


def _compare(specs, rows: int, vocab: int, steps: int, seed: int, ties: bool = False, scale: float = 3.0):
    fast, dense = _chain(specs, True).start(rows, seeds=range(seed, seed + rows)), \
        _chain(specs, False).start(rows, seeds=range(seed, seed + rows))
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(rows, 1, dtype=torch.long)
    for _ in range(steps):
        scores = torch.randn(rows, vocab, generator=generator) * scale
        if ties:  # many equal logits, ties across the k-th place included
            scores = scores.round()
        a, b = fast.select(ids, scores), dense.select(ids, scores)
        assert a.dtype == torch.long and a.shape == (rows,)
        assert torch.equal(a, b), (specs, a, b)


@pytest.mark.parametrize("selector", ["multinomial", "greedy"])
@pytest.mark.parametrize("before", [[], [("temperature", {"value": 0.8})], [("temperature", {"value": 0.0})],
                                    [("temperature", {"value": 1.7})]])
@pytest.mark.parametrize("ties", [False, True])
def test_candidate_selection_draws_the_dense_paths_tokens(candidate_steps, selector, before, ties):
    for k, rows in ((1, 3), (5, 4), (50, 1), (50, 8), (9, 2)):
        _compare([*before, ("top_k", {"k": k}), (selector, {})], rows, 300, steps=25, seed=k * 7 + rows, ties=ties)
    # the fast path served every step without a tie across the k-th place (the first step is dense)
    assert len(candidate_steps) >= (5 if ties else 5 * 24)


@pytest.mark.parametrize("after", [[("top_p", {"p": 0.9})], [("min_p", {"p": 0.05})],
                                   [("temperature", {"value": 0.5}), ("top_n_sigma", {"n": 1.5})]])
@pytest.mark.parametrize("selector", ["multinomial", "greedy"])
def test_candidate_selection_after_processors_that_follow_the_top_k(candidate_steps, after, selector):
    _compare([("temperature", {"value": 0.8}), ("top_k", {"k": 20}), *after, (selector, {})], 4, 200,
             steps=30, seed=3)
    _compare([("top_k", {"k": 6}), *after, (selector, {})], 3, 40, steps=30, seed=4, ties=True)
    assert len(candidate_steps) >= 29  # at least the steps without ties of the first comparison


def test_many_random_rows_agree_with_the_dense_path(kernel):
    _compare([("temperature", {"value": 0.8}), ("top_k", {"k": 50}), ("multinomial", {})], 300, 400, 20, seed=6)
    _compare([("top_k", {"k": 3}), ("multinomial", {})], 300, 12, 20, seed=7, ties=True)


def test_a_tie_across_the_kth_place_runs_densely(candidate_steps):
    run = _chain([("top_k", {"k": 2}), ("multinomial", {})]).start(1, seeds=[0])
    ids = torch.zeros(1, 1, dtype=torch.long)
    run.select(ids, torch.tensor([[0.0, 3.0, 1.0, 2.0]]))  # step 0: dense, verified
    run.select(ids, torch.tensor([[0.0, 3.0, 1.0, 2.0]]))
    assert len(candidate_steps) == 1
    assert run.select(ids, torch.tensor([[0.0, 3.0, 2.0, 2.0]])).item() in (1, 2, 3)
    assert len(candidate_steps) == 1  # the tie: the dense top-k keeps three tokens


@pytest.mark.parametrize("selector", ["multinomial", "greedy"])
def test_a_row_of_only_minus_inf_is_an_error_naming_it(selector):
    run = _chain([("temperature", {"value": 0.8}), ("top_k", {"k": 3}), (selector, {})]).start(3, seeds=[0, 1, 2])
    ids = torch.zeros(3, 1, dtype=torch.long)
    run.select(ids, torch.randn(3, 10))
    scores = torch.randn(3, 10)
    scores[1] = float("-inf")
    with pytest.raises(GenerationError, match=r"row\(s\) \[1\]"):
        run.select(ids, scores)


def test_rows_with_fewer_finite_logits_than_k_never_draw_minus_inf(candidate_steps):
    run = _chain([("top_k", {"k": 5}), ("multinomial", {})]).start(2, seeds=[0, 1])
    ids = torch.zeros(2, 1, dtype=torch.long)
    scores = torch.full((2, 30), float("-inf"))
    scores[0, 7], scores[1, [3, 29]] = 0.0, torch.tensor([1.0, 1.5])
    for _ in range(50):
        tokens = run.select(ids, scores).tolist()
        assert tokens[0] == 7 and tokens[1] in (3, 29)
    assert candidate_steps


def test_a_seeded_row_draws_the_same_alone_or_in_a_batch(kernel):
    specs = [("temperature", {"value": 0.8}), ("top_k", {"k": 40}), ("multinomial", {})]
    generator = torch.Generator().manual_seed(8)
    steps = [torch.randn(5, 100, generator=generator) * 2 for _ in range(30)]
    batch = _chain(specs).start(5, seeds=[10, 11, 12, 13, 14])
    drawn = torch.stack([batch.select(torch.zeros(5, 1, dtype=torch.long), s) for s in steps], 1)
    for r in range(5):
        alone = _chain(specs).start(1, seeds=[10 + r])
        solo = torch.stack([alone.select(torch.zeros(1, 1, dtype=torch.long), s[r:r + 1]) for s in steps], 1)
        assert torch.equal(drawn[r], solo[0])


def test_check_rows_names_every_empty_row_and_every_wild_row():
    check_rows(torch.tensor([[0.0], [1.0]]))
    check_rows(torch.tensor([3e38, 3e38, 3e38]))  # a sum that overflows is not a wild row
    with pytest.raises(EmptyRowError) as caught:
        check_rows(torch.tensor([[0.0], [float("-inf")], [float("-inf")]]))
    assert caught.value.rows == [1, 2]
    with pytest.raises(NonFiniteRowError) as caught:
        check_rows(torch.tensor([float("nan"), 0.0, float("inf"), float("-inf")]))
    assert caught.value.rows == [0, 2]


def test_per_row_uniforms_are_each_rows_own_draws():
    together = RowRandom.from_seeds([4, 5, 6]).uniform(3)
    for r, seed in enumerate([4, 5, 6]):
        assert together[r].tolist() == torch.rand(3, generator=torch.Generator().manual_seed(seed)).tolist()
    assert together.dtype == torch.float32 and together.shape == (3, 3)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 150), min_size=1, max_size=12), drop_at=st.integers(0, 12))
def test_seeded_uniforms_drawn_ahead_equal_one_call_at_a_time(sizes, drop_at):
    """Drawing ahead is invisible: for any sequence of request sizes (none, or more than AHEAD),
    before and after a row leaves the batch, each row gets exactly its own stream's numbers."""
    seeds = [7, 8, 9]
    ahead = RowRandom.from_seeds(seeds)
    direct = {r: torch.Generator().manual_seed(s) for r, s in enumerate(seeds)}
    for i, n in enumerate(sizes):
        if i == drop_at:
            ahead.keep_rows([0, 2])
            del direct[1]
        got = ahead.uniform(n)
        assert got.shape == (len(direct), n) and got.dtype == torch.float32
        for j, g in enumerate(direct.values()):
            assert got[j].tolist() == torch.rand(n, generator=g).tolist()


def test_generators_passed_in_are_drawn_only_as_numbers_are_asked_for():
    g = torch.Generator().manual_seed(3)
    RowRandom([g], 1).uniform(1)
    assert torch.equal(torch.rand(1, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(3))[1:])


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**16), vocab=st.sampled_from([40, 20000]), scale=st.sampled_from([1.0, 4.0, 12.0]),
       p=st.floats(0.05, 0.999), keep=st.integers(1, 3), rounded=st.booleans(), masked=st.booleans())
def test_top_p_candidates_keep_exactly_what_the_dense_top_p_keeps(seed, vocab, scale, p, keep, rounded, masked):
    """Whenever top_p finds its nucleus among the most probable tokens, scattering its
    candidates into a row of -inf gives exactly the dense result: ties, -inf and
    min_tokens_to_keep included."""
    from samplekit.processors.top_p import TopP

    scores = torch.randn(3, vocab, generator=torch.Generator().manual_seed(seed)) * scale
    if rounded:
        scores = scores.round()
    if masked:
        scores[0, : vocab // 2] = float("-inf")
    top_p = TopP(p=p, min_tokens_to_keep=keep)
    found = top_p.filter_candidates(None, scores, None)
    if found is not None:
        values, indices = found
        rebuilt = torch.full_like(scores, float("-inf")).scatter(-1, indices, values)
        assert torch.equal(rebuilt, top_p.process(None, scores, None))


def test_top_p_finds_a_small_nucleus_and_declines_a_wide_one():
    from samplekit.processors.top_p import TopP

    generator = torch.Generator().manual_seed(0)
    peaked, flat = torch.randn(2, 50257, generator=generator) * 8, torch.randn(2, 50257, generator=generator) * 0.5
    values, indices = TopP(p=0.9).filter_candidates(None, peaked, None)
    assert values.shape == indices.shape == (2, 64) and bool(torch.isfinite(values).any(-1).all())
    assert TopP(p=0.9).filter_candidates(None, flat, None) is None  # beyond the top 1024: sort instead
    assert TopP(p=0.9).filter_candidates(None, peaked[:, :8000], None) is None  # a small vocabulary: sort
    assert TopP(p=1.0).filter_candidates(None, peaked, None) is None  # a no-op has nothing to find


@pytest.mark.parametrize("before", [[], [("temperature", {"value": 0.7})], [("repetition_penalty", {"penalty": 1.3})]])
@pytest.mark.parametrize("scale", [0.5, 8.0])
def test_top_p_without_top_k_draws_the_dense_paths_tokens(candidate_steps, before, scale):
    """A chain with top_p and no top-k samples among top_p's candidates when its nucleus is
    small (scale 8) and runs densely when it is wide (scale 0.5), without running the
    processors before it twice (the penalty would change the draws): the same tokens as the
    dense chain either way."""
    _compare([*before, ("top_p", {"p": 0.9}), ("multinomial", {})], 4, 20000, steps=12, seed=11, scale=scale)
    assert bool(candidate_steps) == (scale == 8.0)


def test_a_wide_nucleus_runs_the_processors_before_top_p_once(monkeypatch):
    from samplekit.processors.temperature import Temperature

    calls = []
    original = Temperature.process
    monkeypatch.setattr(Temperature, "process", lambda self, *a: calls.append(1) or original(self, *a))
    run = _chain([("temperature", {"value": 0.7}), ("top_p", {"p": 0.9}), ("multinomial", {})]).start(2, seeds=[0, 1])
    flat = torch.randn(2, 20000, generator=torch.Generator().manual_seed(0)) * 0.5
    for _ in range(3):
        run.select(torch.zeros(2, 1, dtype=torch.long), flat)
    assert len(calls) == 3


_LARGEST_BELOW_ONE = 1.0 - 2.0 ** -24  # the largest uniform a CPU generator draws


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(st.floats(-200.0, 50.0, width=32) | st.just(float("-inf")), min_size=1, max_size=20),
                     min_size=1, max_size=4),
       u=st.floats(0.0, 1.0, exclude_max=True, width=32) | st.just(_LARGEST_BELOW_ONE))
def test_a_cpu_uniform_needs_no_clamp_below_the_total(rows, u):
    """For any weights whose total is at least 1 (the row maximum adds exp(0)) and any uniform a
    CPU generator can draw, the search without the clamp finds the clamped search's position,
    never one past the last token of non-zero weight."""
    n = max(map(len, rows))
    values = torch.tensor([r + [float("-inf")] * (n - len(r)) for r in rows])
    values[:, 0] = torch.where(torch.isneginf(values[:, 0]), 0.0, values[:, 0])  # a finite maximum
    draws = torch.full((len(rows), 1), u, dtype=torch.float32)
    assert torch.equal(inverse_cdf_sample(values, draws, clamp=False), inverse_cdf_sample(values, draws, clamp=True))


def test_a_row_emptied_after_the_top_k_is_an_error_naming_it():
    """The candidate path promises select_candidates no empty row: a processor after the top-k
    that masks a whole row is caught there, with the dense path's message."""
    from samplekit.processor import Processor

    class DropsRowOne(Processor):
        name = "drops_row_one"
        candidate_safe = True

        def process(self, input_ids, scores, ctx):
            out = scores.clone()
            out[1] = float("-inf")
            return out

    registry_chain = _chain([("top_k", {"k": 3}), ("multinomial", {})])
    chain = Chain([*registry_chain.processors[:1], DropsRowOne(), registry_chain.processors[-1]])
    run = chain.start(3, seeds=[0, 1, 2])
    ids = torch.zeros(3, 1, dtype=torch.long)
    with pytest.raises(GenerationError, match=r"row\(s\) \[1\]"):
        run.select(ids, torch.randn(3, 10))  # step 0: dense
    run = chain.start(3, seeds=[0, 1, 2])
    run.verified = True  # the candidate path from the first step
    with pytest.raises(GenerationError, match=r"row\(s\) \[1\]"):
        run.select(ids, torch.randn(3, 10))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 5), vocab=st.integers(2, 300), data=st.data())
def test_largest_gives_topks_values_with_ids_that_hold_them(seed, rows, vocab, data):
    """Invariant: ``largest`` (numpy's partition on the CPU) returns topk's values in its order,
    and ids whose logits are those values, ties and -inf included."""
    from samplekit.largest import largest

    n = data.draw(st.integers(1, vocab), label="n")
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(rows, vocab, generator=g) * 3).round()  # many ties
    scores = scores.masked_fill(torch.rand(rows, vocab, generator=g) < 0.2, float("-inf"))
    values, ids = largest(scores, n)
    assert torch.equal(values, scores.topk(n, dim=-1).values)
    assert torch.equal(scores.gather(-1, ids), values)
    assert all(len(set(row)) == n for row in ids.tolist())
