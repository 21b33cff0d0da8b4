"""The new samplers that keep state or read the history: adaptive-p, sequence bias, banned sequences.

adaptive-p is compared with llama.cpp's ``adaptive_p`` sampler; llama.cpp's tests carry no
adaptive-p vectors (tests/test-sampling.cpp), so the comparison runs a float32 transcription of
its code (``LlamaAdaptiveP`` below) and vectors computed from it. The sequence processors are
compared with transformers' own ``SequenceBiasLogitsProcessor`` and ``NoBadWordsLogitsProcessor``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.errors import GenerationError, ParameterError
from samplekit.processor import default_context
from samplekit.processors.adaptive_p import AdaptiveP
from samplekit.processors.selectors import Greedy, Multinomial
from samplekit.processors.sequences import BannedSequences, SequenceBias
from samplekit.testing import check_processor, logits
from tests.helpers_models import TINY_VOCAB_SIZE, make_tiny_encoding

NEG_INF = float("-inf")
FAST = settings(max_examples=50, deadline=None)
f32 = np.float32

CONFORMANCE = [
    ("adaptive_p", {"target": 0.3, "decay": 0.5}),
    ("adaptive_p", {"target": 1.0, "decay": 0.0}),
    ("sequence_bias", {"bias": [[[1, 2], -3.0], [[0], 1.5], [[2, 1, 0], 2.0]]}),
    ("banned_sequences", {"sequences": [[1, 2], [3], [0, 0, 1]]}),
]


@pytest.mark.parametrize(("name", "params"), CONFORMANCE, ids=[f"{n}-{p}" for n, p in CONFORMANCE])
def test_new_sampler_passes_the_conformance_kit(name, params):
    check_processor(name, params=params, examples=30, vocab=(4, 48))


# -- adaptive-p -------------------------------------------------------------------------------------
class LlamaAdaptiveP:
    """llama.cpp's adaptive-p, transcribed scalar by scalar in float32 from src/llama-sampler.cpp
    (ggml-org/llama.cpp, PR #17927): ``llama_sampler_init_adaptive_p`` (the EMA primed as if the
    target had been reached), ``llama_sampler_adaptive_p_apply`` (softmax, adapted target
    ``2 * target - weighted_sum / total_weight`` clamped to [0, 1], new logits
    ``PEAK - SHARPNESS * d * d / (1 + d)`` with ``d = |(p - adapted) * INV_WIDTH|``, -inf kept,
    softmax) and ``llama_sampler_adaptive_p_accept`` (the EMA of the chosen token's original p)."""

    PEAK, SHARPNESS, INV_WIDTH = f32(5.0), f32(10.0), f32(1.0) / f32(0.3)

    def __init__(self, target: float, decay: float):
        self.target, self.decay = f32(target), f32(min(max(decay, 0.0), 0.99))
        self.weighted_sum = self.target / (f32(1.0) - self.decay)
        self.total_weight = f32(1.0) / (f32(1.0) - self.decay)
        self.original = None

    @staticmethod
    def _softmax(values):
        top = max(values)
        exps = [np.exp(f32(v - top)) for v in values]
        total = f32(0.0)
        for e in exps:
            total = f32(total + e)
        return [f32(e / total) for e in exps]

    def apply(self, logits_row):
        values = [f32(x) for x in logits_row]
        p = self._softmax(values)
        if self.target < 0:
            self.original = None
            return p
        self.original = p
        target = min(max(self.target, f32(0.0)), f32(1.0))
        adapted = target if self.total_weight == 0 else f32(f32(2.0) * target - self.weighted_sum / self.total_weight)
        adapted = min(max(adapted, f32(0.0)), f32(1.0))
        new = []
        for x, q in zip(values, p):
            if x == -np.inf:
                new.append(x)
                continue
            d = abs(f32((q - adapted) * self.INV_WIDTH))
            new.append(f32(self.PEAK - f32(f32(self.SHARPNESS * d) * d) / f32(f32(1.0) + d)))
        return self._softmax(new)

    def accept(self, token: int):
        if self.original is None:
            return
        self.weighted_sum = f32(self.original[token] + f32(self.decay * self.weighted_sum))
        self.total_weight = f32(f32(1.0) + f32(self.decay * self.total_weight))
        self.original = None


def _adaptive_run(target, decay, batch=1):
    p = AdaptiveP(target=target, decay=decay)
    ctx = default_context(batch)
    ctx.state = p.start(batch, ctx)
    return p, ctx


# Vectors computed with the transcription above (llama.cpp's arithmetic): probabilities in, the
# probabilities adaptive-p samples from out, step by step, with the token accepted after each step.
ADAPTIVE_P_VECTORS = [
    # target 0.5, decay 0.9 (llama.cpp's default decay): the EMA starts at 0.5 and moves with 0.4, 0.4, 0.1
    (0.5, 0.9, [0.1, 0.2, 0.3, 0.4], [
        (3, [0.000960, 0.013178, 0.135893, 0.849969], 4.899999, 9.999998),
        (3, [0.000858, 0.012032, 0.128586, 0.858523], 4.809999, 9.999998),
        (0, [0.000779, 0.011133, 0.122663, 0.865424], 4.428999, 9.999998),
    ]),
    # target 0.3: the underdog of a binary split (0.056 against 0.944) takes almost all the mass
    (0.3, 0.5, [0.944, 0.056], [
        (0, [0.000017, 0.999983], 1.244, 2.0),
        (0, [0.0, 1.0], 1.566, 2.0),
    ]),
]


@pytest.mark.parametrize(("target", "decay", "probs", "steps"), ADAPTIVE_P_VECTORS, ids=["t0.5", "t0.3"])
def test_adaptive_p_matches_llama_cpp_vectors(target, decay, probs, steps):
    p, ctx = _adaptive_run(target, decay)
    scores = torch.tensor([probs]).log()
    for token, expected, weighted_sum, total_weight in steps:
        out = p.process(None, scores, ctx).softmax(dim=-1)[0].tolist()
        assert out == pytest.approx(expected, abs=1e-5)
        p.accept(torch.tensor([token]), ctx)
        assert ctx.state["sum"].item() == pytest.approx(weighted_sum, abs=1e-5)
        assert ctx.state["weight"].item() == pytest.approx(total_weight, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(scores=logits(batch=1, vocab=(1, 40), extremes=False),
       target=st.floats(-0.5, 1.0, width=32, allow_subnormal=False), decay=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
       choices=st.lists(st.integers(0, 1000), min_size=1, max_size=6))
def test_adaptive_p_equals_llama_cpp_step_by_step(scores, target, decay, choices):
    """Over a generation (each step's logits rolled, any finite token accepted), the distribution
    adaptive-p samples from and its EMA equal llama.cpp's, to llama.cpp's own test tolerance."""
    p, ctx = _adaptive_run(target, decay)
    ref = LlamaAdaptiveP(target, decay)
    for step, choice in enumerate(choices):
        row = scores.roll(step, dims=-1)
        expected = ref.apply(row[0].tolist())
        got = p.process(None, row, ctx).softmax(dim=-1)[0]
        assert got.tolist() == pytest.approx([float(x) for x in expected], abs=1e-5)
        finite = torch.isfinite(row[0]).nonzero().flatten()
        token = int(finite[choice % len(finite)])
        p.accept(torch.tensor([token]), ctx)
        ref.accept(token)
        assert ctx.state["sum"].item() == pytest.approx(float(ref.weighted_sum), rel=1e-5, abs=1e-6)
        assert ctx.state["weight"].item() == pytest.approx(float(ref.total_weight), rel=1e-5)


@FAST
@given(scores=logits(batch=(1, 4), vocab=(1, 40)))
def test_adaptive_p_with_a_negative_target_changes_nothing_and_learns_nothing(scores):
    p, ctx = _adaptive_run(-1.0, 0.9, scores.shape[0])
    before = {k: v.clone() for k, v in ctx.state.items() if v is not None}
    assert torch.equal(p.process(None, scores, ctx), scores)
    p.accept(scores.argmax(dim=-1), ctx)
    assert all(torch.equal(ctx.state[k], v) for k, v in before.items())


@FAST
@given(scores=logits(batch=(1, 4), vocab=(2, 40)), target=st.floats(0.0625, 0.9375, width=32))
def test_adaptive_p_aims_lower_after_picking_tokens_above_the_target(scores, target):
    """The feedback loop: accepting a token more probable than the target lowers the adapted target
    (2 * target - average), so the next step favours less probable tokens; and vice versa."""
    p, ctx = _adaptive_run(target, 0.9, scores.shape[0])
    p.process(None, scores, ctx)
    chosen_p = ctx.state["probs"].gather(-1, scores.argmax(dim=-1, keepdim=True)).squeeze(-1)
    p.accept(scores.argmax(dim=-1), ctx)
    average = ctx.state["sum"] / ctx.state["weight"]
    above = chosen_p > target + 1e-4
    below = chosen_p < target - 1e-4
    assert (average[above] > target).all() and (average[below] < target).all()


def test_adaptive_p_keeps_minus_inf_and_needs_its_generation():
    scores = torch.tensor([[0.0, NEG_INF, -1.0]])
    p, ctx = _adaptive_run(0.5, 0.9)
    assert p.process(None, scores, ctx)[0, 1].item() == NEG_INF
    with pytest.raises(Exception, match="depends on the generation so far"):
        AdaptiveP()(None, scores)


@settings(max_examples=20, deadline=None)
@given(scores=logits(batch=4, vocab=(2, 30)), steps=st.integers(1, 4))
def test_adaptive_p_rows_with_their_own_target_and_decay_equal_each_row_alone(scores, steps):
    """A shared run (one row per request, each with its own target and decay, one row turned
    off) gives each row what it gets alone, step after step."""
    values = [(0.5, 0.9), (0.2, 0.5), (-1.0, 0.9), (0.8, 0.0)]
    chains = [Chain([AdaptiveP(target=t, decay=d), Greedy()]) for t, d in values]
    shared = chains[0].start(4, seeds=[0, 1, 2, 3], row_chains=chains)
    alone = [c.start(1, seeds=[r]) for r, c in enumerate(chains)]
    for step in range(steps):
        rolled = scores.roll(step, dims=-1)
        tokens = shared.select(None, rolled)
        for r, run in enumerate(alone):
            assert int(run.select(None, rolled[r:r + 1])) == int(tokens[r]), (step, r, values[r])


def test_adaptive_p_samples_in_a_generation_like_llama_cpp_as_the_last_sampler():
    """[adaptive_p, multinomial] draws from adaptive-p's distribution: a target of 0.05 makes the
    least probable of three tokens the most frequent choice."""
    chain = Chain([AdaptiveP(target=0.05, decay=0.0), Multinomial()])
    run = chain.start(2000, seeds=list(range(2000)))
    tokens = run.select(None, torch.tensor([[0.6, 0.3, 0.1]]).log().expand(2000, 3).contiguous())
    counts = torch.bincount(tokens, minlength=3)
    assert counts.argmax().item() == 2


# -- sequence bias and banned sequences --------------------------------------------------------------
def _transformers(name):
    module = pytest.importorskip("transformers.generation.logits_process")
    return getattr(module, name)


@st.composite
def sequences_and_history(draw, vocab=8):
    seqs = draw(st.lists(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=4), min_size=1, max_size=6,
                         unique_by=tuple))
    b = draw(st.integers(1, 3))
    t = draw(st.integers(1, 8))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    ids = torch.randint(0, vocab, (b, t), generator=g)
    for r in range(b):  # often end a row with a sequence's prefix, so that it matches
        seq = seqs[draw(st.integers(0, len(seqs) - 1))]
        if len(seq) > 1 and len(seq) - 1 <= t and draw(st.booleans()):
            ids[r, t - len(seq) + 1:] = torch.tensor(seq[:-1])
    scores = torch.randn(b, vocab, generator=g)
    return seqs, ids, scores


@FAST
@given(case=sequences_and_history(), biases=st.lists(st.floats(-10.0, 10.0), min_size=6, max_size=6))
def test_sequence_bias_equals_transformers_processor(case, biases):
    seqs, ids, scores = case
    pairs = [[s, float(b)] for s, b in zip(seqs, biases)]
    expected = _transformers("SequenceBiasLogitsProcessor")(sequence_bias=pairs)(ids, scores.clone())
    assert torch.allclose(SequenceBias(bias=pairs)(ids, scores), expected, rtol=0, atol=1e-6)


@FAST
@given(case=sequences_and_history())
def test_banned_sequences_equals_transformers_no_bad_words(case):
    seqs, ids, scores = case
    expected = _transformers("NoBadWordsLogitsProcessor")(bad_words_ids=seqs, eos_token_id=None)(ids, scores.clone())
    assert torch.equal(BannedSequences(sequences=seqs)(ids, scores), expected)


@FAST
@given(case=sequences_and_history())
def test_banned_sequences_never_let_a_listed_sequence_complete(case):
    """Whatever token is then chosen among the finite ones, the history never ends with a listed sequence."""
    seqs, ids, scores = case
    out = BannedSequences(sequences=seqs)(ids, scores)
    for r in range(ids.shape[0]):
        for token in torch.isfinite(out[r]).nonzero().flatten().tolist():
            history = ids[r].tolist() + [token]
            assert not any(history[len(history) - len(s):] == s for s in seqs if len(s) <= len(history))


def test_a_prefix_reaching_into_left_padding_does_not_match():
    ids = torch.tensor([[1, 2], [0, 2]])  # row 1's first position is padding
    ctx = default_context(2, attention_mask=torch.tensor([[True, True], [False, True]]))
    p = BannedSequences(sequences=[[1, 2, 3], [2, 4]])
    ctx.state = p.start(2, ctx)
    ids[1, 0] = 1  # the pad holds the prefix's first token: it must not count
    out = p.process(ids, torch.zeros(2, 6), ctx)
    assert out[0, 3].item() == NEG_INF and out[1, 3].item() == 0.0  # [1, 2, 3]: only the unpadded row
    assert out[0, 4].item() == NEG_INF and out[1, 4].item() == NEG_INF  # [2, 4]: both rows end with 2


def test_sequences_given_as_text_are_tokenized_when_the_generation_starts():
    enc = make_tiny_encoding()
    text = "hello world"
    ids = enc.encode(text)
    assert len(ids) > 1
    chain = Chain([BannedSequences(sequences=[text]), SequenceBias(bias={text: 4.0}), Greedy()])
    run = chain.start(1, tokenizer=enc)
    history = torch.tensor([ids[:-1]])
    out = run.process(history, torch.zeros(1, TINY_VOCAB_SIZE))
    assert out[0, ids[-1]].item() == NEG_INF and torch.isfinite(out[0, :ids[-1]]).all()


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SequenceBias(bias=[[[1, 2], 1.0], [[1, 2], 2.0]]), r"the sequence \[1, 2\] is listed twice"),
    (lambda: BannedSequences(sequences=["hello"]), r"'hello' is text, but this generation has no tokenizer"),
])
def test_sequence_problems_found_at_start_name_the_entry(make, message):
    with pytest.raises(ParameterError, match=message):
        make().start(1, default_context(1))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SequenceBias(bias=[[[1, 2]]]), r"sequence_bias\.bias\[0\]: \[\[1, 2\]\] is not allowed; expected a pair"),
    (lambda: SequenceBias(bias=[[[], 1.0]]), r"sequence_bias\.bias\[0\]: \[\] is not allowed"),
    (lambda: SequenceBias(bias=[[[1], "x"]]), r"sequence_bias\.bias\[0\]: the bias 'x' is not allowed"),
    (lambda: SequenceBias(bias=7), r"sequence_bias\.bias: 7 is not allowed; expected a list of pairs"),
    (lambda: BannedSequences(sequences=[[1, -2]]), r"banned_sequences\.sequences\[0\]: \[1, -2\] is not allowed"),
    (lambda: BannedSequences(sequences={"a": 1}), r"banned_sequences\.sequences: \{'a': 1\} is not allowed"),
])
def test_a_malformed_sequence_is_refused_at_construction_naming_its_place(make, message):
    with pytest.raises(ParameterError, match=message):
        make()


def test_a_token_outside_the_vocabulary_names_the_parameter():
    chain = Chain([BannedSequences(sequences=[[1, 99]]), Greedy()])
    with pytest.raises((ParameterError, GenerationError), match=r"token id 99 is outside the vocabulary of 8"):
        chain.start(1).select(torch.tensor([[1]]), torch.zeros(1, 8))


@settings(max_examples=25, deadline=None)
@given(case=sequences_and_history(), joins=st.integers(0, 2))
def test_rows_with_their_own_sequences_equal_each_row_alone(case, joins):
    """Each row carries its own list (one row none at all); rows leave and join, and every row's
    output equals that row run alone with its own list."""
    seqs, ids, scores = case
    ids, scores = ids[:1].expand(3, -1), scores[:1].expand(3, -1)
    lists = [seqs, seqs[:1], []]
    for make in (lambda v: BannedSequences(sequences=v), lambda v: SequenceBias(bias=[[q, 1.5] for q in v])):
        chains = [Chain([make(v), Greedy()]) for v in lists]
        alone = [chain.start(1).process(ids[:1], scores[:1]) for chain in chains]
        run = chains[0].start(3 - joins, row_chains=chains[:3 - joins])
        if joins:
            run.add_rows(joins, row_chains=chains[3 - joins:])
        shared = run.process(ids, scores)
        for r in range(3):
            assert torch.equal(shared[r:r + 1], alone[r]), (r, lists[r])
        run.keep_rows(torch.tensor([2, 0]))
        kept = run.process(ids[:2], scores[:2])
        assert torch.equal(kept[0:1], alone[2]) and torch.equal(kept[1:2], alone[0])
