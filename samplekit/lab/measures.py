"""Text measures of Holtzman et al., "The Curious Case of Neural Text Degeneration" (ICLR 2020).

Every function takes samples as lists of token ids, as the authors' scripts do
(github.com/ari-holtzman/degen, ``metrics/``), and follows those scripts:

- ``perplexity``: exp of the mean negative log-likelihood over all tokens of all samples.
- ``self_bleu``: BLEU-4 of each sample against all the other samples as references, with
  nltk's ``sentence_bleu`` and ``SmoothingFunction().method1``; the mean over the samples (or
  over a seeded subset of hypotheses, as their ``--n_sample``).
- ``zipf_coefficient``: minus the least-squares slope of log frequency on log rank over the
  5,000 most frequent tokens of all samples together.
- ``ends_in_loop`` / ``repetition``: the sample's tail is a phrase repeated back to back
  (the rule is in ``ends_in_loop``); ``repetition`` is the share of samples that do.
- ``distinct_n``: distinct n-grams over all n-grams, n-grams taken within each sample
  (Li et al., 2016). (The degen script's ``distinct_n`` counts n-grams seen exactly once.)
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Sequence

from samplekit.lab.errors import require

Tokens = Sequence[int]
LOOP_MAX_PHRASE = 90
LOOP_SHORT_PHRASE_REPEATS = 50
ZIPF_RANKS = 5000


def perplexity(nlls: Sequence[Sequence[float]]) -> float:
    """exp(mean NLL) over every token of every sample (nan when there is no token)."""
    flat = [x for row in nlls for x in row]
    return math.exp(math.fsum(flat) / len(flat)) if flat else math.nan


def self_bleu(samples: Sequence[Tokens], max_hypotheses: int | None = None, seed: int = 0) -> float:
    """Mean BLEU-4 of each sample against all the others (nltk, smoothing method1).

    With ``max_hypotheses`` below the number of samples, only that many hypotheses, drawn with
    ``random.Random(seed)``, are scored (each still against every other sample).
    """
    bleu = require("nltk.translate.bleu_score", "lab", "Self-BLEU")
    samples = [list(s) for s in samples]
    if len(samples) < 2:
        return math.nan
    picked = range(len(samples))
    if max_hypotheses is not None and 0 < max_hypotheses < len(samples):
        picked = sorted(random.Random(seed).sample(range(len(samples)), max_hypotheses))
    smoothing = bleu.SmoothingFunction().method1
    scores = [bleu.sentence_bleu(samples[:i] + samples[i + 1:], samples[i],
                                 weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smoothing)
              for i in picked]
    return math.fsum(scores) / len(scores)


def zipf_coefficient(samples: Sequence[Tokens], ranks: int = ZIPF_RANKS) -> float:
    """Minus the slope of log(count) on log(rank) over the ``ranks`` most frequent tokens."""
    counts = sorted(Counter(t for s in samples for t in s).values(), reverse=True)[:ranks]
    if len(counts) < 2:
        return math.nan
    xs = [math.log(r) for r in range(1, len(counts) + 1)]
    slope, _ = statistics.linear_regression(xs, [math.log(c) for c in counts])
    return -slope


def loop_phrase(tokens: Tokens, max_phrase: int = LOOP_MAX_PHRASE) -> tuple[int, int]:
    """(n, times): the phrase length n in 1..max_phrase whose last-n-token phrase is repeated
    back to back the most times at the end of ``tokens`` (the shortest such n on a tie)."""
    rev = list(reversed(tokens))
    best = (1, 0)
    for n in range(1, max_phrase + 1):
        if n > len(rev):
            break
        times = 1
        while rev[n * times:n * (times + 1)] == rev[:n]:
            times += 1
        if times > best[1]:
            best = (n, times)
    return best


def ends_in_loop(tokens: Tokens) -> bool:
    """The degen rule: the tail is a phrase of n tokens (n in 1..90) repeated at least twice
    back to back, where n is the length repeated most often; phrases of 1 or 2 tokens count only
    when repeated more than 50 times (so "the the" or a line of dashes is not a loop)."""
    n, times = loop_phrase(tokens)
    return times > 1 and (n >= 3 or times > LOOP_SHORT_PHRASE_REPEATS)


def repetition(samples: Sequence[Tokens]) -> float:
    """The share of samples that end in a loop (``ends_in_loop``)."""
    return sum(map(ends_in_loop, samples)) / len(samples) if samples else math.nan


def distinct_n(samples: Sequence[Tokens], n: int) -> float:
    """Distinct n-grams over all n-grams, counted within each sample (nan when there is none)."""
    grams = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def mean_length(samples: Sequence[Tokens]) -> float:
    return statistics.fmean(len(s) for s in samples) if samples else math.nan
