"""Where Hugging Face transformers has a processor of the same name, samplekit's gives the same
scores on the same input (random rows with -inf entries and ties). Skipped without transformers
(the optional ``bench`` extra)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

transformers_lp = pytest.importorskip("transformers.generation.logits_process")

from samplekit.processors.cutoffs import EpsilonCutoff, EtaCutoff  # noqa: E402
from samplekit.processors.logit_bias import BannedTokens, LogitBias  # noqa: E402
from samplekit.processors.min_new_tokens import MinNewTokens  # noqa: E402
from samplekit.processors.min_p import MinP  # noqa: E402
from samplekit.processors.no_repeat_ngram import NoRepeatNGram  # noqa: E402
from samplekit.processors.penalties import RepetitionPenalty  # noqa: E402
from samplekit.processors.top_p import TopP  # noqa: E402
from samplekit.processors.typical_p import TypicalP  # noqa: E402
from samplekit.processor import default_context  # noqa: E402

NEG_INF = float("-inf")
FAST = settings(max_examples=30, deadline=None)


@st.composite
def batches(draw, ties: bool | None = None, empty_rows: bool = True, max_vocab: int = 40):
    """(input_ids [B, T], scores [B, V]) with -inf entries, optional ties, optional rows of all -inf."""
    b, v, t = draw(st.integers(1, 4)), draw(st.integers(2, max_vocab)), draw(st.integers(0, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scores = torch.randn(b, v, generator=g) * draw(st.sampled_from([0.5, 2.0, 6.0]))
    if draw(st.booleans()) if ties is None else ties:
        scores = scores.round()
    scores = scores.masked_fill(torch.rand(b, v, generator=g) < draw(st.sampled_from([0.0, 0.3, 0.6])), NEG_INF)
    if empty_rows and b > 1 and draw(st.booleans()):
        scores[0] = NEG_INF
    return torch.randint(0, v, (b, t), generator=g), scores


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert torch.equal(torch.isneginf(ours), torch.isneginf(theirs)), "different -inf positions"
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@FAST
@given(case=batches(ties=False), p=st.floats(0.05, 0.99), keep=st.integers(1, 3))
def test_top_p_matches_hf_without_ties(case, p, keep):
    ids, scores = case
    assert_same(TopP(p=p, min_tokens_to_keep=keep)(ids, scores),
                transformers_lp.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores))


@FAST
@given(case=batches(ties=True), p=st.floats(0.05, 0.99))
def test_top_p_with_ties_keeps_what_hf_keeps_plus_the_ties_at_the_cut_off(case, p):
    """The one deliberate difference: HF keeps some of the tokens tied at the cut-off (by sort
    order); samplekit keeps them all."""
    ids, scores = case
    ours, theirs = TopP(p=p)(ids, scores), transformers_lp.TopPLogitsWarper(p)(ids, scores)
    hf_kept, our_kept = torch.isfinite(theirs), torch.isfinite(ours)
    assert not (hf_kept & ~our_kept).any()
    for r in range(scores.shape[0]):
        extra = our_kept[r] & ~hf_kept[r]
        if extra.any():
            assert (scores[r][extra] == scores[r][hf_kept[r]].min()).all()
    assert torch.equal(ours[hf_kept], theirs[hf_kept])


@FAST
@given(case=batches(), p=st.floats(0.0, 1.0, width=32, allow_subnormal=False))
def test_min_p_matches_hf(case, p):
    ids, scores = case
    assert_same(MinP(p=p)(ids, scores), transformers_lp.MinPLogitsWarper(p)(ids, scores))


@FAST
@given(case=batches(ties=False), p=st.floats(0.0, 1.0, width=32, allow_subnormal=False), keep=st.integers(1, 3))
def test_min_p_with_min_tokens_to_keep_matches_hf_without_ties(case, p, keep):
    ids, scores = case
    assert_same(MinP(p=p, min_tokens_to_keep=keep)(ids, scores),
                transformers_lp.MinPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores))


@FAST
@given(case=batches(), mass=st.floats(0.05, 0.99))
def test_typical_p_matches_hf(case, mass):
    ids, scores = case
    assert_same(TypicalP(mass=mass)(ids, scores), transformers_lp.TypicalLogitsWarper(mass)(ids, scores))


@FAST
@given(case=batches(ties=False), mass=st.floats(0.05, 0.99), keep=st.integers(1, 3))
def test_typical_p_with_min_tokens_to_keep_matches_hf_without_ties(case, mass, keep):
    ids, scores = case
    assert_same(TypicalP(mass=mass, min_tokens_to_keep=keep)(ids, scores),
                transformers_lp.TypicalLogitsWarper(mass, min_tokens_to_keep=keep)(ids, scores))


@FAST
@given(case=batches(), eps=st.floats(0.001, 0.5), keep=st.integers(1, 3))
def test_epsilon_cutoff_matches_hf(case, eps, keep):
    ids, scores = case
    assert_same(EpsilonCutoff(epsilon=eps, min_tokens_to_keep=keep)(ids, scores),
                transformers_lp.EpsilonLogitsWarper(eps, min_tokens_to_keep=keep)(ids, scores))


@FAST
@given(case=batches(empty_rows=False), eps=st.floats(0.001, 0.5), keep=st.integers(1, 3))
def test_eta_cutoff_matches_hf(case, eps, keep):
    """Rows of all -inf are left out: Hugging Face raises on them (samplekit keeps them -inf)."""
    ids, scores = case
    scores[:, 0] = scores[:, 0].clamp(min=-1.0)  # at least one finite logit per row
    assert_same(EtaCutoff(epsilon=eps, min_tokens_to_keep=keep)(ids, scores),
                transformers_lp.EtaLogitsWarper(eps, min_tokens_to_keep=keep)(ids, scores))


@FAST
@given(case=batches(), penalty=st.floats(0.1, 5.0))
def test_repetition_penalty_matches_hf(case, penalty):
    ids, scores = case
    assert_same(RepetitionPenalty(penalty=penalty)(ids, scores),
                transformers_lp.RepetitionPenaltyLogitsProcessor(penalty)(ids, scores))


@FAST
@given(case=batches(max_vocab=6), size=st.integers(1, 4))
def test_no_repeat_ngram_matches_hf(case, size):
    ids, scores = case
    assert_same(NoRepeatNGram(size=size)(ids, scores),
                transformers_lp.NoRepeatNGramLogitsProcessor(size)(ids, scores))


@FAST
@given(case=batches(), n=st.integers(0, 6), step=st.integers(0, 6))
def test_min_new_tokens_matches_hf(case, n, step):
    ids, scores = case
    step = min(step, ids.shape[1])  # the generated tokens are the last `step` columns
    eos = [0, scores.shape[1] - 1]
    ctx = default_context(scores.shape[0], step=step, eos_token_ids=tuple(eos))
    theirs = transformers_lp.MinNewTokensLengthLogitsProcessor(ids.shape[1] - step, n, eos)(ids, scores)
    assert_same(MinNewTokens(n=n).process(ids, scores, ctx), theirs)


@FAST
@given(case=batches(), bias=st.floats(-5.0, 5.0, width=32, allow_subnormal=False))
def test_logit_bias_matches_hf_sequence_bias_for_single_tokens(case, bias):
    ids, scores = case
    tokens = sorted({0, scores.shape[1] - 1})
    ours = LogitBias(bias={t: bias + t for t in tokens})(ids, scores)
    theirs = transformers_lp.SequenceBiasLogitsProcessor({(t,): bias + t for t in tokens})(ids, scores)
    assert_same(ours, theirs)


@FAST
@given(case=batches())
def test_banned_tokens_matches_hf_no_bad_words_for_single_tokens(case):
    ids, scores = case
    tokens = sorted({0, scores.shape[1] - 1})
    theirs = transformers_lp.NoBadWordsLogitsProcessor([[t] for t in tokens], eos_token_id=None)(ids, scores)
    assert_same(BannedTokens(tokens=tokens)(ids, scores), theirs)
