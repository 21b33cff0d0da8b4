"""Properties of the decoding loop over random prompt sets (hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.engine import generate
from samplekit.model.gpt import GPTModel, ModelConfig

VOCAB, CONTEXT = 64, 16
torch.manual_seed(0)
MODEL = GPTModel(ModelConfig(vocab_size=VOCAB, context_length=CONTEXT, emb_dim=32, n_heads=4,
                             n_layers=2, drop_rate=0.0)).eval()
SAMPLING = Chain.from_names(("temperature", {"value": 1.0}), ("top_k", {"k": 20}), "multinomial")
GREEDY = Chain.from_names("greedy")

prompt = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=CONTEXT + 4)
prompt_sets = st.lists(st.tuples(prompt, st.integers(0, 2**31 - 1)), min_size=1, max_size=4)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny models gain nothing from threads (see conftest.one_torch_thread)."""


@settings(max_examples=15, deadline=None)
@given(prompt_sets, st.integers(1, 20))
def test_a_seeded_prompt_samples_the_same_tokens_alone_or_in_any_batch(rows, new_tokens):
    prompts, seeds = [p for p, _ in rows], [s for _, s in rows]
    batch = generate(MODEL, prompts, chain=SAMPLING, max_new_tokens=new_tokens, seed=seeds)
    for (p, s), result in zip(rows, batch):
        (solo,) = generate(MODEL, [p], chain=SAMPLING, max_new_tokens=new_tokens, seed=[s])
        assert result.tokens == solo.tokens
        assert result.prompt_length == len(p) and len(result.tokens) == new_tokens


@settings(max_examples=15, deadline=None)
@given(st.lists(prompt, min_size=1, max_size=4), st.integers(1, 24))
def test_the_cached_loop_chooses_the_plain_loops_greedy_tokens(prompts, new_tokens):
    cached = generate(MODEL, prompts, chain=GREEDY, max_new_tokens=new_tokens)
    plain = generate(MODEL, prompts, chain=GREEDY, max_new_tokens=new_tokens, use_cache=False)
    assert [r.tokens for r in cached] == [r.tokens for r in plain]


# -- the chain's candidate fast path == the dense path ----------------------------------------------------

def _chain(specs, fast_paths: bool) -> Chain:
    return Chain.from_names(*specs, fast_paths=fast_paths)


def _strategy(specs) -> str:
    return _chain(specs, True).start(1).strategy.name


before_top_k = st.lists(st.sampled_from([("temperature", {"value": 0.0}), ("temperature", {"value": 0.7}),
                                         ("temperature", {"value": 1.6})]), max_size=1)
after_top_k = st.lists(st.sampled_from([("temperature", {"value": 0.5}), ("top_p", {"p": 0.9}),
                                        ("min_p", {"p": 0.05}), ("top_n_sigma", {"n": 1.5}),
                                        ("top_k", {"k": 4})]), max_size=2)
selector = st.sampled_from([("multinomial", {}), ("greedy", {})])


@settings(max_examples=30, deadline=None)
@given(before_top_k, st.integers(1, 12), after_top_k, selector, st.integers(0, 2**31 - 1),
       st.booleans(), st.integers(1, 5))
def test_the_candidate_fast_path_draws_the_dense_paths_tokens(before, k, after, select, seed, ties, rows):
    specs = [*before, ("top_k", {"k": k}), *after, select]
    fast, dense = _chain(specs, True), _chain(specs, False)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(rows, 1, dtype=torch.long)
    run_fast, run_dense = fast.start(rows, seeds=range(rows)), dense.start(rows, seeds=range(rows))
    assert "candidates" in run_fast.strategy.name and run_dense.strategy.name == "dense"
    for _ in range(4):
        scores = torch.randn(rows, 40, generator=generator) * 2
        if ties:  # many equal logits, ties across the k-th place included
            scores = scores.round()
        assert torch.equal(run_fast.select(ids, scores), run_dense.select(ids, scores))


def test_the_candidate_fast_path_is_taken_without_ties_and_left_with_them(monkeypatch):
    run = _chain([("temperature", {"value": 0.8}), ("top_k", {"k": 2}), ("multinomial", {})], True).start(1, seeds=[0])
    taken, original = [], run.strategy.select
    run.strategy.select = lambda *args: taken.append(original(*args)) or taken[-1]
    ids = torch.zeros(1, 1, dtype=torch.long)
    run.select(ids, torch.tensor([[0.0, 3.0, 1.0, 2.0]]))  # step 0: the dense path, verified
    run.select(ids, torch.tensor([[0.0, 3.0, 1.0, 2.0]]))
    run.select(ids, torch.tensor([[0.0, 3.0, 2.0, 2.0]]))  # 2nd and 3rd tie: dense keeps both
    assert [t is None for t in taken] == [False, True]


def test_chains_that_do_not_qualify_run_densely():
    for specs in ([("min_p", {"p": 0.1}), ("multinomial", {})],  # no top-k, no top-p
                  [("top_k", {"k": 5}), ("logit_bias", {"bias": {3: 1.0}}), ("multinomial", {})]):
        assert _strategy(specs) == "dense", specs


def test_a_top_p_finds_its_own_candidates_after_any_prefix():
    """top_p needs no top-k: it finds its nucleus among the most probable tokens itself, after
    processors that run on the whole vocabulary (a penalty, a top-k that does not commute)."""
    for specs, strategy in (([("top_p", {"p": 0.9}), ("multinomial", {})], "filter-found candidates"),
                            ([("repetition_penalty", {"penalty": 1.2}), ("top_k", {"k": 5}), ("top_p", {"p": 0.9}),
                              ("multinomial", {})], "top-k candidates"),  # the penalty runs densely first
                            ([("repetition_penalty", {"penalty": 1.2}), ("top_p", {"p": 0.9}),
                              ("multinomial", {})], "filter-found candidates"),
                            ([("temperature", {"value": 0.7}), ("top_k", {"k": 5}), ("top_p", {"p": 0.9}),
                              ("multinomial", {})], "top-k candidates")):
        # a plugin may serve the same candidates faster (samplekit-native: "top-k candidates (C
        # kernel)", and "top-p nucleus (C kernel)" for a top-p without a top-k)
        faster = ("top-p nucleus (C kernel)",) if strategy == "filter-found candidates" else ()
        assert _strategy(specs).startswith((strategy, *faster)), specs


def test_a_subclass_overriding_process_is_not_trusted_with_its_parents_fast_path_traits():
    from samplekit.processors.temperature import Temperature
    from samplekit.processors.top_k import TopK

    class Squash(Temperature):
        name = "squash"

        def process(self, input_ids, scores, ctx):  # not monotone-elementwise in the dense sense
            return scores - scores.logsumexp(-1, keepdim=True)

    class OddTopK(TopK):
        name = "odd_top_k"

        def process(self, input_ids, scores, ctx):
            return scores

    multinomial = Chain.from_names("multinomial").selector
    untrusted = Chain([Squash(), TopK(k=3), multinomial]).start(1).strategy  # Squash runs densely, before
    untrusted = getattr(untrusted, "tensors", untrusted)  # the tensor strategy a plugin's kernel wraps
    assert [p.name for p, _ in untrusted.dense] == ["squash"] and not untrusted.prefix
    assert Chain([TopK(k=3), Squash(), multinomial]).start(1).strategy.name == "dense"
    assert Chain([OddTopK(k=3), multinomial]).start(1).strategy.name == "dense"
    from samplekit.strategies.top_k import plan

    dense, prefix, _, _, _ = plan(Chain([Temperature(value=0.5), TopK(k=3), multinomial]))  # on candidates
    assert not dense and [p.name for p, _ in prefix] == ["temperature"]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([("repetition_penalty", {"penalty": 1.3}), ("presence_penalty", {"penalty": 0.8}),
                        ("no_repeat_ngram", {"size": 2})]),
       before_top_k, st.integers(1, 12), after_top_k, selector, st.integers(0, 2**31 - 1), st.booleans())
def test_processors_that_do_not_commute_run_densely_before_the_candidates(dense, before, k, after, select, seed, ties):
    """A penalty before the temperature and top-k: the top-k strategy runs it on the whole
    vocabulary, then samples among the candidates, and draws the dense path's tokens (ties at the
    k-th place included, finished densely from the penalty's output)."""
    specs = [dense, *before, ("top_k", {"k": k}), *after, select]
    fast, slow = _chain(specs, True), _chain(specs, False)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (3, 6), generator=generator)
    run_fast, run_slow = fast.start(3, seeds=[1, 2, 3]), slow.start(3, seeds=[1, 2, 3])
    tensors = getattr(run_fast.strategy, "tensors", run_fast.strategy)  # under a plugin's kernel, if any
    assert run_fast.strategy.name.startswith("top-k candidates") and tensors.dense
    for _ in range(4):
        scores = torch.randn(3, 40, generator=generator) * 2
        if ties:
            scores = scores.round()
        a, b = run_fast.select(ids, scores), run_slow.select(ids, scores)
        assert torch.equal(a, b)
        ids = torch.cat([ids, a[:, None]], dim=1)
