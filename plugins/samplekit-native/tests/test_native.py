"""The C kernel of samplekit-native draws the top-k candidate strategy's tokens, its strategy is
offered through samplekit's step_strategy hook for the chains it recognises, and samplekit works
the same without it (test_native_chain.py: the processors after the top-k)."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import samplekit_native as native
from samplekit import Chain, GenerationError, Param, Processor, Selector, check_rows, inverse_cdf_sample

needs_kernel = pytest.mark.skipif(native.library() is None,
                                  reason="the C kernel cannot be built here (no C compiler, or SAMPLEKIT_NATIVE=0)")
LARGEST_BELOW_ONE = 1.0 - 2.0 ** -24


def tensor_path(scores: torch.Tensor, k: int, temperature: float, u: torch.Tensor):
    """The chain's candidate path in tensor operations: None where it falls back (a tie at the
    k-th place or a row of only -inf), else the tokens and the CDFs it searched."""
    values, indices = scores.topk(k + 1, dim=-1)
    if temperature != 1.0:
        values = values / temperature
    if not bool(torch.isfinite(values[:, 0]).all()):
        return None
    if any(a == b and a != float("-inf") for a, b in values[:, k - 1:k + 1].tolist()):
        return None
    indices, order = indices[:, :k].sort(dim=-1)
    values = values.gather(-1, order)
    cdf = (values - values.amax(-1, keepdim=True)).exp().cumsum(-1)
    return indices.gather(-1, inverse_cdf_sample(values, u)).view(-1), cdf, indices


@needs_kernel
@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 4), vocab=st.sampled_from([7, 60, 700, 5000]),
       k=st.integers(1, 60), temperature=st.sampled_from([1.0, 0.7, 1.3]), scale=st.sampled_from([0.5, 3.0, 20.0]),
       rounded=st.booleans(), masked=st.booleans(), top_uniform=st.booleans(),
       wild=st.sampled_from([None, float("nan"), float("inf")]), wild_at=st.integers(0, 10**6))
def test_the_kernel_draws_the_tensor_paths_tokens(seed, rows, vocab, k, temperature, scale, rounded, masked,
                                                  top_uniform, wild, wild_at):
    """For any scores (ties, -inf, NaN or +inf anywhere, rows with fewer finite scores than k)
    the kernel falls back exactly when the tensor path does, and otherwise draws the same token
    for the same uniform, unless the uniform lands within float rounding of a CDF step (C's expf
    and torch's exp may differ in the last bit)."""
    k = min(k, vocab - 1)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, vocab, generator=generator) * scale
    if rounded:
        scores = scores.round()
    if masked:
        scores[0, : vocab - 2] = float("-inf")
    if wild is not None:
        scores.view(-1)[wild_at % scores.numel()] = wild
    u = torch.rand(rows, 1, generator=generator)
    if top_uniform:
        u[0] = LARGEST_BELOW_ONE
    expected = tensor_path(scores, k, temperature, u)
    kernel = native.Kernel(native.library(), [])
    found = kernel.candidates(scores, k, torch.full((rows,), temperature))
    assert (found >= 0) == (expected is None)
    if expected is None:
        return
    tokens = kernel.draw(u)
    want, cdf, ids = expected
    assert tokens.dtype == torch.long and tokens.shape == (rows,)
    for r in range(rows):
        if tokens[r] != want[r]:
            total = cdf[r, -1].item()
            steps = [cdf[r, (ids[r] == t).nonzero().item()].item() for t in (tokens[r], want[r])]
            assert min(abs(s - u[r].item() * total) for s in steps) <= 1e-5 * total


@needs_kernel
def test_the_kernel_reads_rows_with_a_stride():
    base = torch.randn(3, 2, 100, generator=torch.Generator().manual_seed(1))
    scores = base[:, -1]  # rows 200 apart, as the engine's last-position logits
    kernel = native.Kernel(native.library(), [])
    u = torch.rand(3, 1, generator=torch.Generator().manual_seed(2))
    assert kernel.candidates(scores, 5, torch.full((3,), 0.8)) == -1
    want, _, _ = tensor_path(scores.contiguous(), 5, 0.8, u)
    assert torch.equal(kernel.draw(u), want)


class Scale(Processor):
    """A plugin's own temperature: it declares the promise the kernel reads (divides_logits_by)."""

    name = "scale"
    params = (Param("by", "float", 1.0, "the divisor", low=0.0),)
    keeps_argmax = vocab_symmetric = commutes_with_top_k = candidate_safe = True

    def divides_logits_by(self):
        return self.by if self.by > 0 else None

    def process(self, input_ids, scores, ctx):
        return scores / self.by


class Keep(Processor):
    """A plugin's own top-k: it declares keeps_top."""

    name = "keep"
    params = (Param("n", "int", 5, "how many to keep", low=1),)
    keeps_argmax = is_filter = vocab_symmetric = candidate_safe = True

    def keeps_top(self, vocab_size):
        return self.n if self.n < vocab_size else None

    def process(self, input_ids, scores, ctx):
        kth = scores.topk(min(self.n, scores.shape[-1]), dim=-1).values[:, -1:]
        return scores.masked_fill(scores < kth, float("-inf"))


class Draw(Selector):
    """A plugin's own sampler: it declares samples_by_inverse_cdf."""

    name = "draw"
    random = vocab_symmetric = True
    samples_by_inverse_cdf = True

    def select(self, input_ids, scores, ctx):
        row_max = scores.amax(dim=-1, keepdim=True)  # (B, 1)
        check_rows(row_max)
        return inverse_cdf_sample(scores, ctx.random.uniform(1, scores.device), row_max).view(-1)

    def select_candidates(self, input_ids, values, indices, ctx):
        return indices.gather(-1, inverse_cdf_sample(values, ctx.random.uniform(1, values.device))).view(-1)


def test_the_plugins_own_processors_keep_the_promises_the_kernel_reads():
    from samplekit.testing import check_processor

    for p in (Scale(by=0.7), Keep(n=3), Draw()):
        check_processor(p)


def test_the_conformance_kit_refuses_a_false_promise_the_kernel_would_trust():
    from samplekit.testing import ConformanceFailure, check_processor

    class Halves(Scale):
        name = "halves"

        def divides_logits_by(self):
            return 2 * self.by  # not what process does

        def process(self, input_ids, scores, ctx):  # declared with process: trusted, and false
            return scores / self.by

    class Argmax(Draw):
        name = "argmax_draw"

        def select(self, input_ids, scores, ctx):
            row_max, tokens = scores.max(dim=-1)
            check_rows(row_max)
            return tokens

        samples_by_inverse_cdf = True  # declared again with the new select: trusted, and false

    with pytest.raises(ConformanceFailure, match="divides_logits_by"):
        check_processor(Halves(by=0.7))
    with pytest.raises(ConformanceFailure, match="samples_by_inverse_cdf"):
        check_processor(Argmax())


@needs_kernel
def test_a_plugins_processors_with_the_same_promises_run_on_the_kernel_with_the_same_tokens():
    """Recognised by declared promises, not by class: a chain of a plugin's own processors runs on
    the kernel and draws what the built-in chain draws."""
    ours = Chain([Scale(by=0.8), Keep(n=5), Draw()])
    builtin = Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 5}), "multinomial")
    ids = torch.zeros(3, 1, dtype=torch.long)
    scores = [torch.randn(3, 200, generator=torch.Generator().manual_seed(i)) * 3 for i in range(8)]
    runs = [chain.start(3, seeds=[1, 2, 3]) for chain in (ours, builtin)]
    assert all(isinstance(run.strategy, native.NativeCandidates) for run in runs)
    assert [runs[0].select(ids, s).tolist() for s in scores] == [runs[1].select(ids, s).tolist() for s in scores]


@needs_kernel
def test_only_the_exact_chain_runs_on_the_kernel():
    class Cooler(Scale):
        """Overrides process without declaring the promise again: not trusted."""

        name = "cooler"

        def process(self, input_ids, scores, ctx):
            return scores / (2 * self.by)

    def uses_kernel(*specs) -> bool:
        return isinstance(Chain.from_names(*specs).start(1).strategy, native.NativeCandidates)

    assert uses_kernel(("temperature", {"value": 0.8}), ("top_k", {"k": 5}), "multinomial")
    assert uses_kernel(("top_k", {"k": 5}), "multinomial")
    assert not uses_kernel(("temperature", {"value": 0.0}), ("top_k", {"k": 5}), "multinomial")
    assert uses_kernel(("top_k", {"k": 5}), ("top_p", {"p": 0.9}), ("min_p", {"p": 0.1}),
                       ("temperature", {"value": 0.8}), "multinomial")
    # processors before the top-k that do not commute with it run densely, as tensors, then the kernel
    assert uses_kernel(("top_p", {"p": 0.9}), ("top_k", {"k": 5}), "multinomial")
    assert uses_kernel(("presence_penalty", {"penalty": 0.5}), ("temperature", {"value": 0.8}), ("top_k", {"k": 5}),
                       ("top_p", {"p": 0.9}), "multinomial")
    assert not uses_kernel(("top_k", {"k": 5}), "greedy")
    assert not uses_kernel(("temperature", {"value": 0.8}), ("temperature", {"value": 0.9}), ("top_k", {"k": 5}),
                           "multinomial")
    chain = Chain([Cooler(by=0.8), *Chain.from_names(("top_k", {"k": 5}), "multinomial").processors])
    strategy = chain.start(1).strategy  # the kernel never divides by its T: it runs as written, densely
    assert not isinstance(strategy, native.NativeCandidates) or (strategy.divider is None and strategy.tensors.dense)


def test_the_kernel_builds_once_into_the_cache_folder(tmp_path, monkeypatch):
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("SAMPLEKIT_CACHE_DIR", str(tmp_path))
    built = native.build()
    assert built.parent == tmp_path and built.is_file()
    stamp = built.stat().st_mtime_ns
    assert native.build() == built and built.stat().st_mtime_ns == stamp  # not compiled again
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no scratch left behind


def test_without_a_compiler_the_build_fails_once_saying_why_and_samplekit_keeps_to_tensors(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLEKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises((OSError, subprocess.SubprocessError)):
        native.build()
    monkeypatch.setattr(native, "_library", native._UNLOADED)
    with pytest.warns(native.NativeBuildWarning, match="could not be built.*no-such-compiler"):
        assert native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the second look is silent
        assert native.library() is None
        run = Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 5}), "multinomial").start(
            2, seeds=[0, 1])
    assert run.strategy.name == "top-k candidates"
    ids = torch.zeros(2, 1, dtype=torch.long)
    for _ in range(3):
        assert run.select(ids, torch.randn(2, 50)).shape == (2,)
    monkeypatch.setattr(native, "_library", native._UNLOADED)  # the next test loads it again


def test_samplekit_native_0_turns_the_kernel_off_quietly(monkeypatch):
    monkeypatch.setenv("SAMPLEKIT_NATIVE", "0")
    monkeypatch.setattr(native, "_library", native._UNLOADED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None
    monkeypatch.setattr(native, "_library", native._UNLOADED)


@pytest.fixture
def fresh_plugins(monkeypatch):
    """A clean process-wide plugin host before and after the test."""
    from samplekit import plugins

    monkeypatch.delenv(plugins.BLOCK_ENV, raising=False)
    plugins.reset()
    yield plugins
    plugins.reset()


def test_blocking_the_plugin_leaves_the_built_in_strategy_with_the_same_tokens(fresh_plugins, monkeypatch):
    specs = (("temperature", {"value": 0.8}), ("top_k", {"k": 20}), "multinomial")
    scores = [torch.randn(3, 300, generator=torch.Generator().manual_seed(i)) * 3 for i in range(12)]
    ids = torch.zeros(3, 1, dtype=torch.long)

    def tokens():
        run = Chain.from_names(*specs).start(3, seeds=[5, 6, 7])
        return run.strategy.name, [run.select(ids, s).tolist() for s in scores]

    with_plugin = tokens()
    monkeypatch.setenv("SAMPLEKIT_BLOCK_PLUGINS", "native")
    fresh_plugins.reset()
    without = tokens()
    if native.library() is not None:
        assert with_plugin[0] == "top-k candidates (C kernel)"
    assert without[0] == "top-k candidates" and without[1] == with_plugin[1]


@needs_kernel
def test_a_wild_row_is_the_same_error_with_the_kernel_and_without(monkeypatch):
    chain = Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 3}), "multinomial")
    ids = torch.zeros(3, 1, dtype=torch.long)
    for bad in (float("nan"), float("inf"), float("-inf")):
        run = chain.start(3, seeds=[0, 1, 2])
        run.select(ids, torch.randn(3, 50))  # step 0: dense
        scores = torch.randn(3, 50)
        scores[1] = float("-inf")
        scores[1, 7] = bad
        with pytest.raises(GenerationError, match=r"row\(s\) \[1\]"):
            run.select(ids, scores)
