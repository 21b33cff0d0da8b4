"""The lab's text measures against straightforward reference computations on hand-made texts."""

from __future__ import annotations

import math
import random
import sys
from collections import Counter

import pytest

from samplekit.lab import measures
from samplekit.lab.errors import MissingExtraError


def authors_loop_rule(gen: list[int], max_n: int = 90) -> bool:
    """ari-holtzman/degen metrics/repetition.py, transcribed: the reference for ends_in_loop."""
    rev_gen = list(reversed(gen))
    last_n_repeats = [0] * max_n
    for n in range(1, max_n + 1):
        n_repeat = 1
        while len(rev_gen[n * n_repeat:n * (n_repeat + 1)]) == n and \
                rev_gen[n * n_repeat:n * (n_repeat + 1)] == rev_gen[:n]:
            n_repeat += 1
        last_n_repeats[n - 1] = n_repeat
    best = max(range(max_n), key=lambda x: last_n_repeats[x])
    return last_n_repeats[best] > 1 and (best + 1 >= 3 or last_n_repeats[best] > 50)


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def test_a_text_ending_in_a_repeated_phrase_is_a_loop_and_its_phrase_is_found():
    text = [5, 6, 7, 8, 9] + [1, 2, 3] * 4
    assert measures.loop_phrase(text) == (3, 4)
    assert measures.ends_in_loop(text)
    assert not measures.ends_in_loop([1, 2, 3, 4, 5, 6, 7, 8])  # nothing repeats at the end
    assert not measures.ends_in_loop([1, 2, 3, 4, 1, 2, 3, 4, 9])  # the loop is not the tail


def test_short_phrases_count_as_loops_only_beyond_fifty_repeats():
    assert not measures.ends_in_loop([3, 4, 9, 9])  # "the the"
    assert not measures.ends_in_loop([3] + [9] * 50)
    assert measures.ends_in_loop([3] + [9] * 51)
    assert not measures.ends_in_loop([3] + [1, 2] * 50)
    assert measures.ends_in_loop([3] + [1, 2] * 51)
    assert measures.repetition([[1, 2, 3, 1, 2, 3], [1, 2, 3], [], [7] * 60]) == 0.5


def test_loop_rule_matches_the_authors_script_on_random_texts_with_planted_loops():
    rng = random.Random(0)
    for _ in range(300):
        head = [rng.randrange(6) for _ in range(rng.randrange(0, 30))]
        phrase = [rng.randrange(6) for _ in range(rng.randrange(1, 6))]
        text = head + phrase * rng.randrange(0, 60)
        assert measures.ends_in_loop(text) == authors_loop_rule(text), text


def test_zipf_coefficient_recovers_an_exact_power_law():
    # token r occurs 3600 / r**s times: log count is exactly linear in log rank
    for s, counts in ((1, [720, 360, 240, 180, 144, 120]), (2, [3600, 900, 400, 225, 144, 100])):
        sample = [t for t, c in enumerate(counts) for _ in range(c)]
        random.Random(s).shuffle(sample)
        assert measures.zipf_coefficient([sample[:1000], sample[1000:]]) == pytest.approx(s, abs=1e-9)


def test_zipf_coefficient_is_minus_the_least_squares_slope_over_the_top_ranks():
    rng = random.Random(1)
    samples = [[int(rng.paretovariate(1.2)) for _ in range(200)] for _ in range(20)]
    counts = sorted(Counter(t for s in samples for t in s).values(), reverse=True)[:5]
    expected = -least_squares_slope([math.log(r) for r in range(1, 6)], [math.log(c) for c in counts])
    assert measures.zipf_coefficient(samples, ranks=5) == pytest.approx(expected, rel=1e-12)


def test_distinct_n_counts_ngrams_within_each_sample():
    assert measures.distinct_n([[1, 2, 1, 2]], 1) == 2 / 4
    assert measures.distinct_n([[1, 2, 1, 2]], 2) == 2 / 3  # (1,2) (2,1) (1,2)
    assert measures.distinct_n([[1, 2], [2, 1]], 2) == 1.0  # no n-gram across samples
    assert measures.distinct_n([[1, 2, 3], [1, 2, 3]], 3) == 0.5
    assert math.isnan(measures.distinct_n([[1]], 2))


def test_perplexity_is_exp_of_the_token_mean_nll():
    nlls = [[math.log(2), math.log(2)], [math.log(8)]]
    assert measures.perplexity(nlls) == pytest.approx(2 ** (5 / 3))
    assert math.isnan(measures.perplexity([[], []]))


def test_self_bleu_is_one_for_identical_samples_and_near_zero_for_disjoint_ones():
    pytest.importorskip("nltk", reason="nltk (samplekit-lm[lab]) is not installed")
    same = [[1, 2, 3, 4, 5, 6]] * 4
    assert measures.self_bleu(same) == pytest.approx(1.0)
    disjoint = [list(range(10 * i, 10 * i + 8)) for i in range(4)]
    assert measures.self_bleu(disjoint) < 0.01


def test_self_bleu_is_nltk_sentence_bleu_against_all_other_samples():
    pytest.importorskip("nltk", reason="nltk (samplekit-lm[lab]) is not installed")
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    rng = random.Random(2)
    samples = [[rng.randrange(12) for _ in range(15)] for _ in range(6)]
    expected = sum(sentence_bleu(samples[:i] + samples[i + 1:], samples[i],
                                 smoothing_function=SmoothingFunction().method1) for i in range(6)) / 6
    assert measures.self_bleu(samples) == pytest.approx(expected, rel=1e-12)
    subset = measures.self_bleu(samples, max_hypotheses=3, seed=5)
    picked = sorted(random.Random(5).sample(range(6), 3))
    assert subset == pytest.approx(sum(sentence_bleu(samples[:i] + samples[i + 1:], samples[i],
                                       smoothing_function=SmoothingFunction().method1)
                                       for i in picked) / 3, rel=1e-12)


def test_self_bleu_without_nltk_names_the_extra_to_install(monkeypatch):
    for name in ("nltk", "nltk.translate", "nltk.translate.bleu_score"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"pip install 'samplekit-lm\[lab\]'"):
        measures.self_bleu([[1, 2], [3, 4]])
