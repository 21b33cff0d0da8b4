"""Compare chains on generated text: one row of measures per chain, plus the human row.

Every chain generates from the same prompts with the same seeds (``sampling.sample``); the
measures are those of ``measures`` with the perplexity from a teacher-forced forward pass
(``scoring.token_nlls``): the model's own probabilities of the generated tokens, not the
chain's modified distribution. When the prompts come with human continuations (a corpus), the
``human`` row measures them, cut to the same length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from samplekit.lab import measures
from samplekit.lab.chains import NamedChain
from samplekit.lab.corpus import PromptSet, encode_pair
from samplekit.lab.errors import LabError
from samplekit.lab.sampling import sample
from samplekit.lab.scoring import token_nlls

# (key, column title, format) in table order
MEASURES = (
    ("perplexity", "perplexity", "{:.2f}"),
    ("self_bleu4", "Self-BLEU-4", "{:.3f}"),
    ("zipf", "Zipf", "{:.3f}"),
    ("repetition", "repetition %", "{:.2%}"),
    ("distinct_1", "distinct-1", "{:.3f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("distinct_3", "distinct-3", "{:.3f}"),
    ("mean_length", "mean length", "{:.1f}"),
    ("seconds_per_sample", "s/sample", "{:.4f}"),
)


@dataclass
class Row:
    name: str
    values: dict[str, float]
    tokens: list[list[int]] = field(default_factory=list, repr=False)


@dataclass
class Comparison:
    rows: list[Row]
    settings: dict
    timings: dict[str, float]


def text_measures(tokens: Sequence[Sequence[int]], nlls: Sequence[Sequence[float]], *,
                  bleu_hypotheses: int | None = None, seed: int = 0) -> dict[str, float]:
    """Every measure but the time, for one set of samples."""
    return {
        "perplexity": measures.perplexity(nlls),
        "self_bleu4": measures.self_bleu(tokens, bleu_hypotheses, seed),
        "zipf": measures.zipf_coefficient(tokens),
        "repetition": measures.repetition(tokens),
        "distinct_1": measures.distinct_n(tokens, 1),
        "distinct_2": measures.distinct_n(tokens, 2),
        "distinct_3": measures.distinct_n(tokens, 3),
        "mean_length": measures.mean_length(tokens),
    }


def select_prompts(prompts: PromptSet, samples: int) -> PromptSet:
    """``samples`` prompts: the first ones of a corpus (never repeated, so the human row has no
    duplicates), or a prompt file cycled as often as needed (seeds differ per sample)."""
    if samples < 1:
        raise LabError(f"--samples {samples}: expected at least 1")
    have = len(prompts.prompts)
    if prompts.continuations is not None:
        if samples > have:
            raise LabError(f"--samples {samples}: {prompts.source} has {have} prompts with human "
                           f"continuations; use --samples {have} or fewer")
        return PromptSet(prompts.prompts[:samples], prompts.continuations[:samples], prompts.source)
    return PromptSet([prompts.prompts[i % have] for i in range(samples)], None, prompts.source)


def encode_prompts(enc, prompts: PromptSet, length: int) -> tuple[list[list[int]], list[list[int]] | None]:
    """Prompt ids, and the human continuations' ids cut to ``length`` tokens (when given)."""
    if prompts.continuations is None:
        return [_encode_prompt(enc, p) for p in prompts.prompts], None
    pairs = [encode_pair(enc, p, c) for p, c in zip(prompts.prompts, prompts.continuations)]
    return [p or _encode_prompt(enc, "") for p, _ in pairs], [c[:length] for _, c in pairs]


def compare(model, enc, chains: Sequence[NamedChain], prompts: PromptSet, *, samples: int = 200,
            length: int = 128, seed: int = 0, batch_size: int = 64,
            bleu_hypotheses: int | None = None, progress=None) -> Comparison:
    """Generate with every chain and measure each; add the human row when there are continuations.
    ``progress(message)``, when given, hears each chain's start and end (one line each)."""
    prompts = select_prompts(prompts, samples)
    prompt_ids, human = encode_prompts(enc, prompts, length)
    rows, timings = [], {"generate": 0.0, "score": 0.0, "measure": 0.0}
    sets = [(c.name, c.chain) for c in chains] + ([("human", None)] if human is not None else [])
    for number, (name, chain) in enumerate(sets, 1):
        began = time.perf_counter()
        if progress is not None:
            progress(f"{number}/{len(sets)} {name}: " + ("scoring the human text" if chain is None else
                     f"generating {len(prompt_ids)} samples of up to {length} tokens, then scoring"))
        seconds = math.nan
        if chain is None:
            tokens = human
        else:
            out = sample(model, prompt_ids, chain, length=length, seed=seed, batch_size=batch_size,
                         tokenizer=enc)
            tokens, seconds = out.tokens, out.seconds / len(prompt_ids)
            timings["generate"] += out.seconds
        started = time.perf_counter()
        nlls = token_nlls(model, prompt_ids, tokens)
        timings["score"] += time.perf_counter() - started
        started = time.perf_counter()
        values = text_measures(tokens, nlls, bleu_hypotheses=bleu_hypotheses, seed=seed)
        timings["measure"] += time.perf_counter() - started
        rows.append(Row(name, {**values, "seconds_per_sample": seconds}, tokens))
        if progress is not None:
            progress(f"{number}/{len(sets)} {name}: done in {time.perf_counter() - began:.1f} s")
    settings = {"samples": samples, "length": length, "seed": seed, "prompts": prompts.source,
                "chains": {c.name: c.source for c in chains}, "bleu_hypotheses": bleu_hypotheses}
    return Comparison(rows, settings, timings)


def _encode_prompt(enc, text: str) -> list[int]:
    """The prompt's ids (special tokens may be written literally); an empty prompt starts from
    end-of-text."""
    from samplekit.model.tokenizer import end_of_text_id

    ids = enc.encode(text, allowed_special=enc.special_tokens_set)
    if not ids:
        eot = end_of_text_id(enc)
        if eot is None:
            raise LabError("an empty prompt needs a tokenizer with <|endoftext|> to start from")
        ids = [eot]
    return ids
