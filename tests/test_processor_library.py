"""The built-in processor library: properties (each test names its invariant) and behaviour."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.chain import Chain
from samplekit.errors import GenerationError, ParameterError
from samplekit.processor import RowRandom, StepContext, default_context
from samplekit.processors.cutoffs import EpsilonCutoff, EtaCutoff
from samplekit.processors.dynamic_temperature import DynamicTemperature
from samplekit.processors.gumbel import Gumbel
from samplekit.processors.logit_bias import BannedStrings, BannedTokens, LogitBias
from samplekit.processors.min_new_tokens import MinNewTokens
from samplekit.processors.min_p import MinP
from samplekit.processors.no_repeat_ngram import NoRepeatNGram
from samplekit.processors.penalties import FrequencyPenalty, PresencePenalty, RepetitionPenalty
from samplekit.processors.selectors import Greedy
from samplekit.processors.temperature import Temperature
from samplekit.processors.top_k import TopK
from samplekit.processors.top_n_sigma import TopNSigma
from samplekit.processors.top_p import TopP
from samplekit.processors.typical_p import TypicalP
from tests.helpers_models import TINY_EOT, TINY_VOCAB_SIZE, make_tiny_encoding

NEG_INF = float("-inf")
FAST = settings(max_examples=30, deadline=None)

# One or two configurations of every logits processor that needs no tokenizer.
LIBRARY = [
    TopP(p=0.7), TopP(p=0.3, min_tokens_to_keep=3),
    MinP(p=0.1), MinP(p=0.5, min_tokens_to_keep=2),
    TypicalP(mass=0.5), TypicalP(mass=0.9, min_tokens_to_keep=2),
    TopNSigma(n=1.0), TopNSigma(n=0.3),
    EpsilonCutoff(epsilon=0.05), EtaCutoff(epsilon=0.05, min_tokens_to_keep=2),
    RepetitionPenalty(penalty=1.5), RepetitionPenalty(penalty=0.7, scope="generated"),
    FrequencyPenalty(penalty=0.5, scope="history"), PresencePenalty(penalty=-0.5),
    NoRepeatNGram(size=2), NoRepeatNGram(size=1),
    LogitBias(bias={0: 1.5, 1: NEG_INF, 2: -3.0}), BannedTokens(tokens=[0, 2]),
    MinNewTokens(n=3, eos_token_ids=[0]),
    DynamicTemperature(temperature=1.0, range=0.5), DynamicTemperature(temperature=0.3, range=0.5, exponent=2.0),
]
IDS = [repr(p) for p in LIBRARY]


@st.composite
def cases(draw, min_vocab: int = 3, max_vocab: int = 40):
    """(input_ids [B, T], scores [B, V], attention_mask [B, T] or None, step): -inf entries, ties,
    rows of all -inf and left padding all occur."""
    b = draw(st.integers(1, 4))
    v = draw(st.integers(min_vocab, max_vocab))
    t = draw(st.integers(0, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scores = torch.randn(b, v, generator=g) * draw(st.sampled_from([0.3, 2.0, 8.0]))
    if draw(st.booleans()):
        scores = scores.round()  # ties
    scores = scores.masked_fill(torch.rand(b, v, generator=g) < draw(st.sampled_from([0.0, 0.3, 0.7])), NEG_INF)
    if b > 1 and draw(st.booleans()):
        scores[draw(st.integers(0, b - 1))] = NEG_INF
    ids = torch.randint(0, v + draw(st.sampled_from([0, 3])), (b, t), generator=g)  # ids >= V may occur
    mask = None
    if t and draw(st.booleans()):
        pads = torch.randint(0, t + 1, (b,), generator=g)
        mask = torch.arange(t)[None, :] >= pads[:, None]  # left padding
        ids = ids.masked_fill(~mask, 0)
    step = draw(st.integers(0, t))
    return ids, scores, mask, step


def run(proc, ids, scores, mask=None, step=0, **context):
    ctx = default_context(scores.shape[0], attention_mask=mask, step=step, **context)
    ctx.state = proc.start(scores.shape[0], ctx)
    return proc.process(ids, scores, ctx)


# -- every processor: the framework contract ------------------------------------------------------

@pytest.mark.parametrize("proc", LIBRARY, ids=IDS)
@FAST
@given(case=cases())
def test_keeps_shape_dtype_never_writes_input_never_nan_rows_independent(proc, case):
    """Shape, dtype and device kept; input_ids and scores not written (compared with clones taken
    before the call); no NaN; a row of all -inf stays all -inf; each row processed alone gives
    exactly what it gives inside the batch (history, padding and all)."""
    ids, scores, mask, step = case
    scores = scores.clone()
    scores[-1] = NEG_INF
    before, ids_before = scores.clone(), ids.clone()
    out = run(proc, ids, scores, mask, step)
    assert out.shape == scores.shape and out.dtype == scores.dtype and out.device == scores.device
    assert not torch.isnan(out).any()
    assert torch.equal(scores, before) and torch.equal(ids, ids_before)
    assert torch.isneginf(out[-1]).all()
    for r in range(scores.shape[0]):
        alone = run(proc, ids[r:r + 1], scores[r:r + 1], None if mask is None else mask[r:r + 1], step)
        assert torch.equal(alone, out[r:r + 1])


@pytest.mark.parametrize("proc", LIBRARY, ids=IDS)
@FAST
@given(case=cases())
def test_declared_traits_hold_filters_only_mask_and_keeps_argmax_keeps_the_largest(proc, case):
    """is_filter: every output logit is the input's or -inf. keeps_argmax: each row's largest
    input logit is still among the row's largest output logits."""
    ids, scores, mask, step = case
    out = run(proc, ids, scores, mask, step)
    if proc.is_filter:
        assert torch.equal(torch.where(torch.isneginf(out), NEG_INF, scores), out)
    if proc.keeps_argmax:
        rows = torch.isfinite(scores.amax(dim=-1))
        top = out.gather(-1, scores.argmax(dim=-1, keepdim=True)).squeeze(-1)
        assert torch.equal(top[rows], out.amax(dim=-1)[rows])


def test_processors_keep_half_precision_dtype():
    scores = torch.randn(2, 16).half()
    ids = torch.randint(0, 16, (2, 5))
    for proc in LIBRARY:
        out = run(proc, ids, scores, None, 2)
        assert out.dtype == torch.float16 and not torch.isnan(out).any(), proc


# -- declared ranges --------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, values, allowed", [
    (TopP, {"p": 0.0}, "number in (0, 1]"),
    (TopP, {"p": 1.5}, "number in (0, 1]"),
    (TopP, {"min_tokens_to_keep": 0}, "integer in [1, inf)"),
    (MinP, {"p": -0.1}, "number in [0, 1]"),
    (TypicalP, {"mass": 0.0}, "number in (0, 1]"),
    (TopNSigma, {"n": 0.0}, "number in (0, inf)"),
    (EpsilonCutoff, {"epsilon": 1.0}, "number in (0, 1)"),
    (EtaCutoff, {"epsilon": 0.0}, "number in (0, 1)"),
    (RepetitionPenalty, {"penalty": 0.0}, "number in (0, inf)"),
    (FrequencyPenalty, {"penalty": 2.5}, "number in [-2, 2]"),
    (PresencePenalty, {"penalty": -3}, "number in [-2, 2]"),
    (NoRepeatNGram, {"size": 0}, "integer in [1, inf)"),
    (MinNewTokens, {"n": -1}, "integer in [0, inf)"),
    (DynamicTemperature, {"temperature": 0.0}, "number in (0, inf)"),
    (DynamicTemperature, {"range": -1.0}, "number in [0, inf)"),
])
def test_out_of_range_parameters_are_rejected_with_the_allowed_range(cls, values, allowed):
    with pytest.raises(ParameterError, match=rf"{cls.name}\.{next(iter(values))}: .* out of range; "
                                             rf"expected {re.escape(allowed)}"):
        cls(**values)


def test_penalty_scope_must_be_history_or_generated():
    with pytest.raises(ParameterError, match="one of history, generated"):
        FrequencyPenalty(penalty=0.5, scope="prompt")


# -- top_p ------------------------------------------------------------------------------------------

@FAST
@given(case=cases(), p=st.floats(0.01, 0.99))
def test_top_p_keeps_at_least_one_token_per_row_and_the_smallest_nucleus(case, p):
    _, scores, _, _ = case
    out = TopP(p=p)(None, scores)
    probs = scores.softmax(dim=-1)
    for r in range(scores.shape[0]):
        if torch.isneginf(scores[r]).all():
            continue
        kept = torch.isfinite(out[r])
        assert kept.sum() >= 1
        threshold = scores[r][kept].min()
        assert probs[r][kept].sum() >= p - 1e-5  # the kept tokens reach p ...
        assert probs[r][scores[r] > threshold].sum() < p + 1e-5  # ... and dropping the least probable would not


@FAST
@given(case=cases())
def test_top_p_of_one_is_a_no_op(case):
    _, scores, _, _ = case
    assert TopP(p=1.0)(None, scores) is scores


def test_top_p_keeps_every_token_tied_at_the_cut_off():
    out = TopP(p=0.5)(None, torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
    assert torch.isfinite(out).all()  # HF would keep 2 of the 4, chosen by sort order


# -- min_p ------------------------------------------------------------------------------------------

@FAST
@given(case=cases(), p=st.floats(0.0, 1.0, width=32, allow_subnormal=False))
def test_min_p_keeps_the_argmax_and_exactly_the_tokens_above_p_times_the_max_prob(case, p):
    _, scores, _, _ = case
    out = MinP(p=p)(None, scores)
    probs = scores.double().softmax(dim=-1)
    limit = p * probs.amax(dim=-1, keepdim=True)
    finite_rows = torch.isfinite(scores.amax(dim=-1))
    assert torch.isfinite(out.gather(-1, scores.argmax(-1, keepdim=True)))[finite_rows].all()
    clear_keep = (probs >= limit * (1 + 1e-4)) & torch.isfinite(scores)
    clear_drop = probs < limit * (1 - 1e-4)
    assert torch.isfinite(out)[clear_keep].all()
    assert torch.isneginf(out)[clear_drop].all()


# -- typical_p --------------------------------------------------------------------------------------

@FAST
@given(case=cases(), mass=st.floats(0.01, 1.0))
def test_typical_p_keeps_at_least_one_token_per_row(case, mass):
    _, scores, _, _ = case
    out = TypicalP(mass=mass)(None, scores)
    finite_rows = torch.isfinite(scores.amax(dim=-1))
    assert (torch.isfinite(out).sum(dim=-1) >= 1)[finite_rows].all()


def test_typical_p_can_drop_the_argmax_so_it_does_not_declare_keeps_argmax():
    scores = torch.tensor([[0.4, 0.3, 0.3]]).log()  # the argmax is the least typical token
    out = TypicalP(mass=0.3)(None, scores)
    assert torch.isneginf(out[0, 0]) and not TypicalP.keeps_argmax


# -- top_n_sigma ------------------------------------------------------------------------------------

@FAST
@given(case=cases(), n=st.floats(0.1, 3.0))
def test_top_n_sigma_keeps_the_logits_within_n_std_of_the_max(case, n):
    _, scores, _, _ = case
    out = TopNSigma(n=n)(None, scores)
    for r in range(scores.shape[0]):
        finite = scores[r][torch.isfinite(scores[r])].double()
        if not len(finite):
            continue
        threshold = finite.max() - n * finite.std(unbiased=False)
        clear = (scores[r].double() - threshold).abs() > 1e-4
        assert torch.equal(torch.isfinite(out[r])[clear], (scores[r].double() >= threshold)[clear])


def test_top_n_sigma_commutes_with_temperature():
    scores = torch.randn(3, 30, generator=torch.Generator().manual_seed(1))
    a = TopNSigma(n=1.0)(None, Temperature(value=0.5)(None, scores))
    b = Temperature(value=0.5)(None, TopNSigma(n=1.0)(None, scores))
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))


# -- epsilon / eta ----------------------------------------------------------------------------------

@FAST
@given(case=cases(), eps=st.floats(0.001, 0.5))
def test_epsilon_cutoff_removes_only_tokens_below_epsilon(case, eps):
    _, scores, _, _ = case
    out = EpsilonCutoff(epsilon=eps)(None, scores)
    probs = scores.softmax(dim=-1)
    removed = torch.isneginf(out) & torch.isfinite(scores)
    assert (probs[removed] < eps).all()
    kept_not_top = torch.isfinite(out) & (scores < scores.amax(dim=-1, keepdim=True))
    assert (probs[kept_not_top] >= eps).all()


@FAST
@given(case=cases(), eps=st.floats(0.001, 0.5))
def test_eta_cutoff_threshold_is_at_most_epsilon(case, eps):
    _, scores, _, _ = case
    out = EtaCutoff(epsilon=eps)(None, scores)
    probs = scores.softmax(dim=-1)
    removed = torch.isneginf(out) & torch.isfinite(scores)
    assert (probs[removed] < eps).all()


# -- penalties --------------------------------------------------------------------------------------

@FAST
@given(case=cases(), penalty=st.floats(0.1, 5.0))
def test_repetition_penalty_only_changes_seen_tokens_and_pushes_them_toward_unlikely(case, penalty):
    ids, scores, _, _ = case
    out = RepetitionPenalty(penalty=penalty)(ids, scores)
    seen = torch.zeros_like(scores, dtype=torch.bool)
    for r in range(ids.shape[0]):
        for t in ids[r].tolist():
            if t < scores.shape[1]:
                seen[r, t] = True
    assert torch.equal(out[~seen], scores[~seen])
    expected = torch.where(scores < 0, scores * penalty, scores / penalty)
    assert torch.equal(out[seen], expected[seen])


@FAST
@given(case=cases(), freq=st.floats(-2.0, 2.0, width=32, allow_subnormal=False),
       presence=st.floats(-2.0, 2.0, width=32, allow_subnormal=False))
def test_frequency_and_presence_penalties_subtract_count_times_penalty(case, freq, presence):
    ids, scores, _, step = case
    for scope in ("history", "generated"):
        ctx = default_context(scores.shape[0], step=step)
        counted = ids if scope == "history" else ids[:, ids.shape[1] - step:]
        expected = scores.clone()
        for r in range(ids.shape[0]):
            for t, c in Counter(counted[r].tolist()).items():
                if t < scores.shape[1]:
                    expected[r, t] -= freq * c + presence
        out = FrequencyPenalty(penalty=freq, scope=scope).process(ids, scores, ctx)
        out = PresencePenalty(penalty=presence, scope=scope).process(ids, out, ctx)
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("proc", [RepetitionPenalty(penalty=1.7), FrequencyPenalty(penalty=0.8, scope="history"),
                                  PresencePenalty(penalty=0.8, scope="history"), NoRepeatNGram(size=2),
                                  NoRepeatNGram(size=1)], ids=repr)
@FAST
@given(case=cases(min_vocab=5))
def test_penalties_ignore_left_padding(proc, case):
    """A left-padded row gives what the same row gives alone, unpadded, whatever the pad id."""
    ids, scores, _, _ = case
    ids = ids.clamp(max=scores.shape[1] - 1)
    pads = 3
    padded = torch.cat([torch.full((ids.shape[0], pads), 4), ids], dim=1)  # pad id 4: a real token id
    mask = torch.cat([torch.zeros(ids.shape[0], pads, dtype=torch.bool),
                      torch.ones_like(ids, dtype=torch.bool)], dim=1)
    assert torch.equal(run(proc, padded, scores, mask), run(proc, ids, scores))


def test_generated_scope_counts_only_this_generations_tokens():
    ids = torch.tensor([[1, 1, 2, 3]])  # prompt [1, 1], generated [2, 3] at step 2
    out = PresencePenalty(penalty=1.0).process(ids, torch.zeros(1, 5), default_context(1, step=2))
    assert out.tolist() == [[0.0, 0.0, -1.0, -1.0, 0.0]]


# -- no_repeat_ngram --------------------------------------------------------------------------------

@FAST
@given(case=cases(max_vocab=6), size=st.integers(1, 4))
def test_no_repeat_ngram_bans_exactly_the_tokens_that_complete_a_seen_ngram(case, size):
    ids, scores, _, _ = case
    out = NoRepeatNGram(size=size)(ids, scores)
    for r in range(ids.shape[0]):
        row = ids[r].tolist()
        banned = set()
        if len(row) >= size:
            prefix = row[len(row) - size + 1:]
            banned = {row[i + size - 1] for i in range(len(row) - size + 1) if row[i:i + size - 1] == prefix}
        expected = scores[r].clone()
        expected[[t for t in banned if t < scores.shape[1]]] = NEG_INF
        assert torch.equal(out[r], expected)


# -- logit_bias / banned_tokens / banned_strings ----------------------------------------------------

@pytest.fixture(scope="module")
def enc():
    return make_tiny_encoding()


def test_logit_bias_by_string_uses_the_tokenizer(enc):
    (the,) = enc.encode(" the")
    out = run(LogitBias(bias={" the": 5.0, 7: -1.0}), None, torch.zeros(2, TINY_VOCAB_SIZE), tokenizer=enc)
    expected = torch.zeros(2, TINY_VOCAB_SIZE)
    expected[:, the], expected[:, 7] = 5.0, -1.0
    assert torch.equal(out, expected)


def test_logit_bias_string_of_several_tokens_is_a_parameter_error_naming_it(enc):
    with pytest.raises(ParameterError, match=r"logit_bias\.bias: 'xyzzy' is 5 tokens"):
        run(LogitBias(bias={"xyzzy": 1.0}), None, torch.zeros(1, TINY_VOCAB_SIZE), tokenizer=enc)


def test_logit_bias_string_without_a_tokenizer_is_a_parameter_error():
    with pytest.raises(ParameterError, match="'the' is a string, but there is no tokenizer"):
        LogitBias(bias={"the": 1.0})(None, torch.zeros(1, 10))


def test_logit_bias_rejects_the_same_token_twice_and_plus_inf(enc):
    with pytest.raises(ParameterError, match="same token"):
        run(LogitBias(bias={"a": 1.0, ord("a"): 2.0}), None, torch.zeros(1, TINY_VOCAB_SIZE), tokenizer=enc)
    with pytest.raises(ParameterError, match="finite number or -inf"):
        LogitBias(bias={1: math.inf})


def test_token_ids_outside_the_vocabulary_are_a_parameter_error():
    with pytest.raises(ParameterError, match="token id 12 is outside the vocabulary of 10"):
        BannedTokens(tokens=[12])(None, torch.zeros(1, 10))


def test_banned_tokens_by_id_and_string(enc):
    out = run(BannedTokens(tokens=["a", 3]), None, torch.zeros(1, TINY_VOCAB_SIZE), tokenizer=enc)
    assert torch.isneginf(out[0]).nonzero().flatten().tolist() == [3, ord("a")]


def test_banned_strings_bans_the_last_token_of_the_strings_tokenization(enc):
    tokens = enc.encode(" hello")
    assert len(tokens) > 2
    out = run(BannedStrings(strings=[" hello"]), torch.tensor([tokens[:-1]]), torch.zeros(1, TINY_VOCAB_SIZE),
              tokenizer=enc)
    assert torch.isneginf(out[0, tokens[-1]])
    # every token that starts with the remaining bytes is banned too; an unrelated one is not
    assert torch.isneginf(out[0, ord("o")]) and torch.isfinite(out[0, ord("x")])


def test_banned_strings_blocks_every_completion_in_a_generation(enc):
    """A fake model that wants to write 'say hello world' token by token (by whichever
    tokenization): greedy decoding with banned_strings never produces 'hello'."""
    target = enc.encode("say hello world hello")
    chain = Chain([BannedStrings(strings=["hello"]), Greedy()])
    run_ = chain.start(1, tokenizer=enc, eos_token_ids=(TINY_EOT,))
    ids = torch.tensor([[ord(" ")]])
    out_bytes = b""
    for step in range(len(target) + 4):
        want = target[step] if step < len(target) else TINY_EOT
        scores = torch.zeros(1, TINY_VOCAB_SIZE)
        scores[0, want] = 10.0
        scores[0, ord("o")] = 5.0  # second choice: would complete "hell" + "o"
        scores[0, ord("l")] = 4.0
        token = run_.select(ids, scores)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if token.item() == TINY_EOT:
            break
        out_bytes += enc.decode_single_token_bytes(token.item())
    assert b"say hel" in out_bytes and b"hello" not in out_bytes


def test_banned_strings_builds_its_tables_once_per_tokenizer_and_end_of_text_ids(enc, monkeypatch):
    """The byte tables cost a pass over the vocabulary: later generations with the same
    tokenizer and end-of-text ids reuse them and ban exactly the same tokens."""
    from samplekit.processors import logit_bias

    built = []
    original = logit_bias.token_bytes
    monkeypatch.setattr(logit_bias, "token_bytes", lambda *a: built.append(1) or original(*a))
    processor = BannedStrings(strings=[" hello"])
    ids = torch.tensor([enc.encode(" hello")[:-1]])
    outs = [run(processor, ids, torch.zeros(1, TINY_VOCAB_SIZE), tokenizer=enc, eos_token_ids=eos)
            for eos in ((TINY_EOT,), (TINY_EOT,), ())]
    assert len(built) == 2  # the second generation reused the first one's tables
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_banned_strings_needs_a_tokenizer():
    with pytest.raises(ParameterError, match="'bad' needs a tokenizer"):
        BannedStrings(strings=["bad"])(torch.tensor([[1]]), torch.zeros(1, 10))


def test_banned_strings_never_bans_special_tokens(enc):
    out = run(BannedStrings(strings=["end"]), torch.tensor([[1]]), torch.zeros(1, TINY_VOCAB_SIZE), tokenizer=enc)
    assert torch.isfinite(out[0, TINY_EOT])  # "<|endoftext|>" contains "end" but is special


# -- min_new_tokens ---------------------------------------------------------------------------------

def test_min_new_tokens_suppresses_end_of_text_until_step_n():
    n, eos, vocab = 3, 5, 8
    chain = Chain([MinNewTokens(n=n), Greedy()])
    run_ = chain.start(2, eos_token_ids=(eos,))
    ids = torch.zeros(2, 1, dtype=torch.long)
    scores = torch.zeros(2, vocab)
    scores[:, eos] = 10.0  # the model wants to stop at once
    chosen = [run_.select(ids, scores).tolist() for _ in range(n + 1)]
    assert all(eos not in step for step in chosen[:n]) and chosen[n] == [eos, eos]


def test_min_new_tokens_without_end_of_text_ids_is_a_no_op():
    scores = torch.zeros(1, 4)
    assert MinNewTokens(n=3)(None, scores, default_context(1)) is scores


def test_min_new_tokens_counts_each_rows_own_steps():
    """A row that joined the run later (fewer tokens chosen) keeps its ban while the others
    have lifted theirs."""
    ctx = default_context(3, step=5, eos_token_ids=(1,))
    ctx.first_steps, ctx._latest_start = torch.tensor([0, 3, 4]), 4  # steps: 5, 2, 1
    out = MinNewTokens(n=2).process(None, torch.zeros(3, 4), ctx)
    assert torch.isneginf(out[:, 1]).tolist() == [False, False, True]
    assert bool(torch.isfinite(out[:, [0, 2, 3]]).all())


def test_a_bare_call_of_a_processor_that_counts_steps_is_refused_naming_it():
    from samplekit.errors import InteropError

    with pytest.raises(InteropError, match="min_new_tokens depends on the generation so far"):
        MinNewTokens(n=3)(None, torch.zeros(1, 4))
    with pytest.raises(InteropError, match="frequency_penalty"):
        FrequencyPenalty(penalty=1.0)(torch.tensor([[1, 2]]), torch.zeros(1, 4))
    FrequencyPenalty(penalty=1.0, scope="history")(torch.tensor([[1, 2]]), torch.zeros(1, 4))  # history: fine


# -- dynamic temperature ----------------------------------------------------------------------------

def test_dynamic_temperature_uses_the_high_end_for_a_flat_row_and_the_low_end_for_a_peaked_one():
    proc = DynamicTemperature(temperature=1.0, range=0.5)
    flat = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(proc(None, flat), flat / 1.5)
    peaked = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(proc(None, peaked), peaked / 0.5)


def test_dynamic_temperature_at_zero_keeps_only_the_maximum():
    out = DynamicTemperature(temperature=0.5, range=0.5)(None, torch.tensor([[100.0, 0.0, 0.0]]))
    assert out[0, 0] == 100.0 and torch.isneginf(out[0, 1:]).all()


def test_dynamic_temperature_with_zero_range_is_plain_temperature():
    scores = torch.randn(2, 9)
    assert torch.equal(DynamicTemperature(temperature=0.7)(None, scores), Temperature(value=0.7)(None, scores))


# -- gumbel -----------------------------------------------------------------------------------------

def test_gumbel_reproduces_under_a_seed_and_a_row_does_not_depend_on_its_batch():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    sel = Gumbel()
    pick = lambda seeds, s: sel.select(None, s, StepContext(random=RowRandom.from_seeds(seeds), batch_size=len(seeds)))
    a = pick([1, 2, 3], scores)
    assert torch.equal(a, pick([1, 2, 3], scores))
    assert pick([2], scores[1:2]).item() == a[1].item()


def test_gumbel_never_picks_neg_inf_and_rejects_an_empty_row():
    scores = torch.tensor([[0.0, NEG_INF, 0.0, NEG_INF]]).expand(200, -1)
    tokens = Gumbel().select(None, scores, StepContext(random=RowRandom.from_seeds(range(200)), batch_size=200))
    assert set(tokens.tolist()) == {0, 2}
    with pytest.raises(GenerationError):
        Gumbel()(None, torch.full((1, 3), NEG_INF))


def test_gumbel_empirical_distribution_over_seeds_matches_softmax():
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    n = 20000
    ctx = StepContext(random=RowRandom.from_seeds(range(n)), batch_size=n)
    tokens = Gumbel().select(None, logits.expand(n, -1), ctx)
    freq = torch.bincount(tokens, minlength=4).float() / n
    torch.testing.assert_close(freq, logits.softmax(-1), atol=0.012, rtol=0)


# -- order matters ----------------------------------------------------------------------------------

def test_temperature_then_top_p_differs_from_top_p_then_temperature():
    """Why order matters: top_p reads probabilities, and temperature changes them.

    logits [2, 1, 0] have probabilities [.67, .24, .09]; top_p 0.7 keeps two tokens. At
    temperature 0.5 the probabilities become [.87, .12, .02], and top_p 0.7 keeps only one.
    """
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    temp_first = Chain([Temperature(value=0.5), TopP(p=0.7), Greedy()]).apply(None, scores)
    top_p_first = Chain([TopP(p=0.7), Temperature(value=0.5), Greedy()]).apply(None, scores)
    assert temp_first.tolist() == [[4.0, NEG_INF, NEG_INF]]
    assert top_p_first.tolist() == [[4.0, 2.0, NEG_INF]]


def test_repetition_penalty_before_top_k_differs_from_after():
    """Penalise then truncate lets a fresh token win; truncate then penalise keeps the repeat."""
    ids = torch.tensor([[0]])  # token 0 was already generated
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    penalty_first = Chain([RepetitionPenalty(penalty=2.0), TopK(k=1), Greedy()])
    top_k_first = Chain([TopK(k=1), RepetitionPenalty(penalty=2.0), Greedy()])
    assert penalty_first.select(ids, scores).item() == 1
    assert top_k_first.select(ids, scores).item() == 0
