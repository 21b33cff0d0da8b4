"""Penalty windows (``last_n``, llama.cpp's ``repeat_last_n``): which tokens count, against
llama.cpp's ring of the last n accepted tokens and Hugging Face's whole-history penalty."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplekit.errors import ParameterError
from samplekit.processor import RowSettings, default_context
from samplekit.processors.penalties import FrequencyPenalty, PresencePenalty, RepetitionPenalty

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VOCAB = 12


def llama_penalties(history: list[int], scores: list[float], last_n: int, repeat: float, freq: float,
                    present: float) -> list[float]:
    """llama.cpp's ``llama_sampler_penalties`` written out: every token of the history is accepted
    in order into a ring of ``last_n`` (-1: the whole history, 0: nothing) with a count per token;
    apply changes the logit of each token with a count: CTRL ratio (``logit <= 0`` multiplied,
    else divided), then ``- count * freq - (count > 0) * present``."""
    capacity = len(history) if last_n < 0 else last_n
    ring: list[int] = []
    for t in history:
        if capacity == 0:
            break
        if len(ring) >= capacity:
            ring.pop(0)
        ring.append(t)
    out = list(scores)
    for t in set(ring):
        count = ring.count(t)
        out[t] = out[t] * repeat if out[t] <= 0 else out[t] / repeat
        out[t] -= count * freq + (count > 0) * present
    return out


def _apply_all(ids, scores, ctx, last_n, repeat, freq, present):
    out = RepetitionPenalty(penalty=repeat, last_n=last_n).process(ids, scores, ctx)
    out = FrequencyPenalty(penalty=freq, scope="history", last_n=last_n).process(ids, out, ctx)
    return PresencePenalty(penalty=present, scope="history", last_n=last_n).process(ids, out, ctx)


histories = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20)
windows = st.integers(-1, 25)


@SETTINGS
@given(history=histories, last_n=windows, seed=st.integers(0, 2**16))
def test_penalties_with_last_n_equal_llama_cpps_ring_of_the_last_n_tokens(history, last_n, seed):
    """Invariant: with a window of n, exactly the last n tokens of the history count (once each
    for the repetition penalty, by their count for frequency), as llama.cpp's ring buffer."""
    scores = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3
    ids = torch.tensor([history])
    got = _apply_all(ids, scores, default_context(1), last_n, 1.5, 0.4, 0.3)
    want = llama_penalties(history, scores[0].tolist(), last_n, 1.5, 0.4, 0.3)
    torch.testing.assert_close(got[0], torch.tensor(want), rtol=1e-6, atol=1e-6)


@SETTINGS
@given(history=histories, pad=st.integers(1, 6), last_n=windows, seed=st.integers(0, 2**16))
def test_left_padding_takes_no_place_in_the_window(history, pad, last_n, seed):
    """Invariant: a left-padded row (mask False on the padding) gets the result of the same row
    unpadded, whatever the window: padding neither counts nor uses up a place of the last n."""
    scores = torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3
    plain = _apply_all(torch.tensor([history]), scores, default_context(1), last_n, 1.5, 0.4, 0.3)
    padded_ids = torch.tensor([[history[0]] * pad + history])  # padding holding a real id: it must not count
    mask = torch.tensor([[False] * pad + [True] * len(history)])
    padded = _apply_all(padded_ids, scores, default_context(1, attention_mask=mask), last_n, 1.5, 0.4, 0.3)
    torch.testing.assert_close(padded, plain)


def test_whole_history_window_equals_transformers_repetition_penalty():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (4, 30))
    scores = torch.randn(4, 50) * 4
    want = transformers.RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())
    torch.testing.assert_close(RepetitionPenalty(penalty=1.3, last_n=-1)(ids, scores), want)
    # a window of n on unpadded input is transformers' penalty over the last n columns
    want_last = transformers.RepetitionPenaltyLogitsProcessor(1.3)(ids[:, -7:], scores.clone())
    torch.testing.assert_close(RepetitionPenalty(penalty=1.3, last_n=7)(ids, scores), want_last)


def test_window_of_zero_turns_the_penalty_off_and_a_large_window_is_the_whole_history():
    ids, scores = torch.tensor([[1, 2, 3, 1]]), torch.tensor([[1.0, 2.0, 3.0, -1.0, 0.5]])
    assert torch.equal(RepetitionPenalty(penalty=2.0, last_n=0)(ids, scores), scores)
    assert torch.equal(FrequencyPenalty(penalty=1.0, scope="history", last_n=0)(ids, scores), scores)
    whole = RepetitionPenalty(penalty=2.0)(ids, scores)
    assert torch.equal(RepetitionPenalty(penalty=2.0, last_n=100)(ids, scores), whole)
    assert torch.equal(RepetitionPenalty(penalty=2.0, last_n=1)(ids, scores),
                       torch.tensor([[1.0, 1.0, 3.0, -1.0, 0.5]]))  # only the last token, 1


def test_generated_scope_windows_the_generated_tokens_only():
    """scope generated, last_n 2: the last two tokens this row chose, never the prompt's."""
    ids = torch.tensor([[4, 4, 1, 2, 3]])  # prompt 4 4, then 1 2 3 generated
    ctx = default_context(1)
    ctx.step = 3
    out = FrequencyPenalty(penalty=1.0, last_n=2).process(ids, torch.zeros(1, 5), ctx)
    assert out.tolist() == [[0.0, 0.0, -1.0, -1.0, 0.0]]
    ctx.step = 1  # one generated token: the window holds just it
    out = PresencePenalty(penalty=1.0, last_n=5).process(ids, torch.zeros(1, 5), ctx)
    assert out.tolist() == [[0.0, 0.0, 0.0, -1.0, 0.0]]


def test_rows_with_their_own_windows_equal_each_row_alone():
    torch.manual_seed(1)
    ids, scores = torch.randint(0, VOCAB, (3, 15)), torch.randn(3, VOCAB) * 2
    own = [RepetitionPenalty(penalty=1.4, last_n=n) for n in (-1, 3, 0)]
    base = own[0]
    ctx = default_context(3)
    ctx.row_settings = {id(base): RowSettings(base, own)}
    together = base.process(ids, scores, ctx)
    for r, p in enumerate(own):
        alone = p.process(ids[r:r + 1], scores[r:r + 1], default_context(1))
        torch.testing.assert_close(together[r:r + 1], alone)


def test_a_window_below_minus_one_is_refused_naming_the_parameter():
    with pytest.raises(ParameterError, match=r"last_n.*-2.*\[-1"):
        RepetitionPenalty(penalty=1.2, last_n=-2)
