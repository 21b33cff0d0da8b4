"""samplekit-dry: the conformance kit, agreement with the reference implementation, breakers,
padding and the search window."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from samplekit.processor import default_context
from samplekit.testing import check_processor
from samplekit_dry import DRY


def _apply(p, ids, scores, **ctx_fields):
    ctx = default_context(ids.shape[0], **ctx_fields)
    ctx.state = p.start(ids.shape[0], ctx)
    return p.process(ids, scores, ctx)


def _webui_dry(ids: list[int], vocab: int, multiplier: float, base: float, allowed_length: int,
               breakers: set[int], last_n: int = -1) -> list[float]:
    """text-generation-webui's DRYLogitsProcessor for one row, on zero logits (the reference)."""
    if last_n > 0:
        ids = ids[-last_n:]
    scores = [0.0] * vocab
    last_token = ids[-1]
    if last_token in breakers:
        return scores
    match_lengths: dict[int, int] = {}
    for i in [i for i, val in enumerate(ids[:-1]) if val == last_token]:
        next_token = ids[i + 1]
        if next_token in breakers:
            continue
        match_length = 1
        while match_length < 50:
            j = i - match_length
            if j < 0:
                break
            previous_token = ids[-(match_length + 1)]
            if ids[j] != previous_token or previous_token in breakers:
                break
            match_length += 1
        match_lengths[next_token] = max(match_length, match_lengths.get(next_token, 0))
    for token, length in match_lengths.items():
        if length >= allowed_length:
            scores[token] -= multiplier * base ** (length - allowed_length)
    return scores


@pytest.mark.parametrize("params", [
    {},
    {"multiplier": 2.0, "base": 3.0, "allowed_length": 1, "sequence_breakers": [0], "penalty_last_n": 6},
    {"multiplier": 0.0},
    {"multiplier": 1.0, "allowed_length": 1, "sequence_breakers": [[1, 2], 0, [3, 3, 4]]},
])
def test_dry_conforms(params):
    check_processor(DRY, params=params, examples=30, vocab=(1, 12))


def test_dry_is_listed_with_its_distribution_and_version():
    from samplekit.plugins import PluginHost

    entry = PluginHost(autoload=True).build_registry().get("dry")
    assert (entry.cls, entry.provider.distribution, entry.provider.version) == (DRY, "samplekit-dry", "0.1.0")


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 4), min_size=2, max_size=40), min_size=1, max_size=3),
       allowed_length=st.integers(1, 4), breakers=st.sets(st.integers(0, 5), max_size=2),
       last_n=st.sampled_from([-1, 3, 10]), base=st.sampled_from([1.75, 2.0]))
def test_dry_penalties_equal_the_reference_implementation(rows, allowed_length, breakers, last_n, base):
    vocab = 6
    for row in rows:
        ids = torch.tensor([row])
        p = DRY(multiplier=0.8, base=base, allowed_length=allowed_length, sequence_breakers=sorted(breakers),
                penalty_last_n=last_n)
        out = _apply(p, ids, torch.zeros(1, vocab))
        expected = _webui_dry(row, vocab, 0.8, base, allowed_length, breakers, last_n)
        assert torch.allclose(out[0], torch.tensor(expected)), (row, out.tolist(), expected)


def test_dry_caps_the_measured_repeat_at_50_tokens():
    ids = torch.tensor([[1, 2] * 60])  # ... 1 2 1 2: token 1 extends a repeat of 118 tokens
    out = _apply(DRY(multiplier=1.0, base=1.1, allowed_length=2), ids, torch.zeros(1, 4))
    assert out[0, 1].item() == pytest.approx(-(1.1 ** 48), rel=1e-5)


def test_dry_penalises_the_token_that_extends_the_longest_match():
    ids = torch.tensor([[3, 1, 2, 9, 7, 1, 2, 8, 5, 7, 1, 2]])  # "7 1 2" then 8; "1 2" then 9
    out = _apply(DRY(multiplier=1.0, base=2.0, allowed_length=2), ids, torch.zeros(1, 10))
    assert out[0, 8].item() == -2.0  # match "7 1 2": 3 tokens, 2 ** 1
    assert out[0, 9].item() == -1.0  # match "1 2": 2 tokens, 2 ** 0
    assert (out[0, [0, 1, 2, 3, 4, 5, 6, 7]] == 0).all()


def test_dry_never_penalises_after_a_sequence_breaker():
    ids = torch.tensor([[4, 5, 6, 4, 5, 6]])
    assert torch.equal(_apply(DRY(sequence_breakers=[6]), ids, torch.zeros(1, 8)), torch.zeros(1, 8))


def test_dry_matches_do_not_cross_a_sequence_breaker():
    ids = torch.tensor([[1, 0, 2, 3, 9, 1, 0, 2, 3]])  # with 0 a breaker the match is "2 3" only
    out = _apply(DRY(multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[0]), ids, torch.zeros(1, 10))
    assert out[0, 9].item() == -1.0


class _CharTokenizer:
    """One token per character (its code point); encode() takes no keyword arguments."""

    def encode(self, text):
        return [ord(c) for c in text]


def test_dry_string_breakers_are_tokenized_with_the_context_tokenizer():
    colon = ord(":")
    ids = torch.tensor([[ord("a"), colon, ord("b"), ord("c"), ord("a"), colon, ord("b")]])
    scores = torch.zeros(1, 128)
    with_tok = _apply(DRY(multiplier=1.0, base=2.0, allowed_length=2), ids, scores, tokenizer=_CharTokenizer())
    without = _apply(DRY(multiplier=1.0, base=2.0, allowed_length=2), ids, scores)
    assert with_tok[0, ord("c")].item() == 0.0  # ":" breaks the match: "b" alone is under allowed_length
    assert without[0, ord("c")].item() == -2.0  # no tokenizer: ":" is no breaker; match "a : b", 2 ** 1


def test_dry_ignores_padding_positions():
    row = torch.tensor([[5, 6, 7, 8, 5, 6, 7]])
    padded = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 5, 6, 7], [1, 5, 6, 7, 8, 5, 6, 7, 1, 1]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    p = DRY(multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[])
    alone = _apply(p, row, torch.zeros(1, 10))
    out = _apply(p, padded, torch.zeros(2, 10), attention_mask=mask)
    assert torch.equal(out[0], alone[0])
    assert out[1, 8].item() == -2.0  # row 1: "1 5 6 7 8 5 6 7" with right padding, same repeat


def test_dry_only_searches_the_last_penalty_last_n_tokens():
    ids = torch.tensor([[1, 2, 3, 4, 0, 0, 0, 0, 1, 2, 3]])
    p_all = DRY(multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[], penalty_last_n=-1)
    p_window = DRY(multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[], penalty_last_n=6)
    assert _apply(p_all, ids, torch.zeros(1, 5))[0, 4].item() == -2.0
    assert _apply(p_window, ids, torch.zeros(1, 5))[0, 4].item() == 0.0
    p_off = DRY(multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[], penalty_last_n=0)
    assert torch.equal(_apply(p_off, ids, torch.zeros(1, 5)), torch.zeros(1, 5))


def test_a_multi_token_breaker_breaks_a_repeat_only_where_it_occurs_complete():
    # "1 2 3 | 7 8 | 1 2 3" with breaker [7, 8]: the repeat "1 2 3" is measured up to the breaker
    ids = torch.tensor([[5, 1, 2, 3, 4, 7, 8, 5, 1, 2, 3]])
    seq = DRY(multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[[7, 8]])
    plain = DRY(multiplier=1.0, base=2.0, allowed_length=2, sequence_breakers=[])
    assert _apply(plain, ids, torch.zeros(1, 10))[0, 4].item() == -4.0  # "5 1 2 3": 4 tokens, 2 ** 2
    assert _apply(seq, ids, torch.zeros(1, 10))[0, 4].item() == -4.0  # the breaker lies outside the repeat
    broken = torch.tensor([[7, 8, 1, 2, 3, 4, 9, 7, 8, 1, 2, 3]])  # "7 8" inside the would-be repeat
    assert _apply(seq, broken, torch.zeros(1, 10))[0, 4].item() == -2.0  # "1 2 3" only: 2 ** 1
    assert _apply(plain, broken, torch.zeros(1, 10))[0, 4].item() == -8.0  # "7 8 1 2 3": 2 ** 3
    half = torch.tensor([[7, 1, 2, 3, 4, 9, 7, 1, 2, 3]])  # 7 alone is no breaker
    assert _apply(seq, half, torch.zeros(1, 10))[0, 4].item() == -4.0
    ends = torch.tensor([[1, 7, 8, 5, 1, 7, 8]])  # the history ends with the breaker: nothing penalised
    assert torch.equal(_apply(seq, ends, torch.zeros(1, 10)), torch.zeros(1, 10))


@settings(max_examples=100, deadline=None)
@given(before=st.lists(st.integers(0, 4), min_size=1, max_size=15),
       after=st.lists(st.integers(0, 4), min_size=1, max_size=15), allowed_length=st.integers(1, 3))
def test_a_multi_token_breaker_acts_as_a_one_token_breaker_in_its_place(before, after, allowed_length):
    """Invariant: ``before + [7, 8] + after`` with breaker [7, 8] gets the penalties of ``before +
    [9] + after`` with breaker 9, on every token but 7, 8 and 9 (the breakers' own tokens)."""
    vocab, kw = 10, {"multiplier": 1.0, "base": 2.0, "allowed_length": allowed_length}
    pair = _apply(DRY(sequence_breakers=[[7, 8]], **kw), torch.tensor([before + [7, 8] + after]), torch.zeros(1, vocab))
    one = _apply(DRY(sequence_breakers=[9], **kw), torch.tensor([before + [9] + after]), torch.zeros(1, vocab))
    assert torch.equal(pair[0, :7], one[0, :7])
    assert (pair[0, 7:9] == 0).all()  # a breaker's tokens are never penalised


@pytest.mark.parametrize("bad", [[[]], [[1, -2]], [1.5], [[1, "a"]], "\n"])
def test_a_malformed_breaker_is_refused_naming_it(bad):
    from samplekit.errors import ParameterError

    with pytest.raises(ParameterError, match=r"dry\.sequence_breakers"):
        DRY(sequence_breakers=bad)
