"""Hypothesis strategies for samplekit processors: logits, token histories, generators, contexts.

Every size argument takes an ``int`` (exactly that), a ``(low, high)`` tuple (inclusive range)
or a hypothesis strategy of ints::

    from hypothesis import given
    from samplekit.testing import strategies as sks

    @given(scores=sks.logits(batch=(1, 4), vocab=(2, 32)))
    def test_my_filter_keeps_a_finite_logit(scores): ...

``logits`` produces the inputs that break processors in practice: -inf entries (tokens masked by
an earlier filter), ties (several tokens sharing a row's maximum), and large magnitudes (±1e4),
but never a row that is entirely -inf unless ``all_neginf_rows=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from samplekit.processor import RowRandom, StepContext

NEG_INF = float("-inf")
EXTREMES = (1e4, -1e4)

IntSpec = int | tuple[int, int] | SearchStrategy


def sizes(spec: IntSpec) -> SearchStrategy:
    """An int strategy from an ``int``, an inclusive ``(low, high)`` tuple, or a strategy."""
    if isinstance(spec, SearchStrategy):
        return spec
    if isinstance(spec, bool):
        raise TypeError(f"a size must be an int, a (low, high) tuple or a strategy, not {spec!r}")
    if isinstance(spec, int):
        return st.just(spec)
    low, high = spec
    return st.integers(low, high)


@st.composite
def logits(draw, batch: IntSpec = (1, 4), vocab: IntSpec = (1, 48), *, all_neginf_rows: bool = False,
           extremes: bool = True, neginf: bool = True, dtype: torch.dtype | SearchStrategy = torch.float32
           ) -> torch.Tensor:
    """A ``[B, V]`` tensor of logits with -inf entries, ties and (if ``extremes``) ±1e4.

    Unless ``all_neginf_rows`` is true, each row keeps at least one finite logit. ``dtype`` is a
    torch dtype or a strategy of them; values are made in float32 and then cast.

    The values come from a seeded generator shaped by a few drawn features (scale, the share of
    -inf, of ties, of extremes), so hypothesis draws and shrinks a handful of choices rather than
    one per logit: a failing example shrinks quickly towards small, plain tensors.
    """
    b = draw(sizes(batch))
    v = draw(sizes(vocab))
    scale = draw(st.sampled_from([1.0, 0.0, 5.0, 30.0]), label="scale")
    tie_share = draw(st.sampled_from([0.0, 0.2, 0.5]), label="ties")
    neginf_share = draw(st.sampled_from([0.0, 0.2, 0.5, 0.9]), label="-inf") if neginf else 0.0
    extreme_share = draw(st.sampled_from([0.0, 0.1, 0.3]), label="extremes") if extremes else 0.0
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1), label="seed"))
    scores = torch.randn(b, v, generator=g) * scale  # (B, V)
    # Ties: some positions copy the row's maximum, others a shared second value.
    tie_to = torch.where(torch.rand(b, v, generator=g) < 0.5, scores.amax(-1, keepdim=True), scores[:, :1])
    scores = torch.where(torch.rand(b, v, generator=g) < tie_share, tie_to, scores)
    sign = torch.where(torch.rand(b, v, generator=g) < 0.5, -1.0, 1.0)
    scores = torch.where(torch.rand(b, v, generator=g) < extreme_share, sign * EXTREMES[0], scores)
    scores = scores.masked_fill(torch.rand(b, v, generator=g) < neginf_share, NEG_INF)
    if not all_neginf_rows:
        empty = torch.isneginf(scores).all(dim=-1)  # (B,)
        keep = torch.randint(0, v, (b,), generator=g)
        fix = torch.zeros(b, v, dtype=torch.bool)
        fix[torch.arange(b), keep] = True
        scores = torch.where(fix & empty[:, None], torch.randn(b, v, generator=g) * max(scale, 1.0), scores)
    if isinstance(dtype, SearchStrategy):
        dtype = draw(dtype)
    return scores.to(dtype)


@st.composite
def token_histories(draw, batch: IntSpec = (1, 4), vocab: IntSpec = (1, 48), length: IntSpec = (1, 12)
                    ) -> torch.Tensor:
    """A ``[B, T]`` LongTensor of token ids in ``[0, V)``.

    Some rows repeat a short pattern (``a b c a b c a``), so processors that look for repeats
    (penalties, DRY) have something to find; the others are uniform ids.
    """
    b = draw(sizes(batch))
    v = draw(sizes(vocab))
    t = draw(sizes(length))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1), label="seed"))
    ids = torch.randint(0, v, (b, t), generator=g)  # (B, T)
    period = draw(st.integers(1, 4), label="pattern length")
    repeat = torch.rand(b, generator=g) < draw(st.sampled_from([0.5, 0.0, 1.0]), label="share of repeating rows")
    if t:
        tiled = ids[:, :period].repeat(1, -(-t // period))[:, :t]  # (B, T)
        ids = torch.where(repeat[:, None], tiled, ids)
    return ids


def seeds(batch: int) -> SearchStrategy:
    """A list of ``batch`` per-row seeds."""
    return st.lists(st.integers(0, 2**32 - 1), min_size=batch, max_size=batch)


def generators() -> SearchStrategy:
    """A seeded ``torch.Generator`` (CPU)."""
    return st.integers(0, 2**32 - 1).map(lambda s: torch.Generator().manual_seed(s))


@st.composite
def step_contexts(draw, batch: IntSpec = (1, 4), *, step: IntSpec = (0, 8), prompt_length: IntSpec = (1, 12),
                  context_length: IntSpec | None = None, eos_token_ids: Sequence[int] = (),
                  tokenizer=None) -> StepContext:
    """A StepContext with one seeded generator per row (``RowRandom.from_seeds``).

    ``ctx.extras["seeds"]`` holds the seeds, so a test can rebuild an identical context.
    """
    b = draw(sizes(batch))
    row_seeds = draw(seeds(b))
    lengths = torch.tensor([draw(sizes(prompt_length)) for _ in range(b)], dtype=torch.long)
    return StepContext(
        random=RowRandom.from_seeds(row_seeds),
        batch_size=b,
        step=draw(sizes(step)),
        prompt_lengths=lengths,
        context_length=None if context_length is None else draw(sizes(context_length)),
        eos_token_ids=tuple(eos_token_ids),
        tokenizer=tokenizer,
        extras={"seeds": row_seeds},
    )
