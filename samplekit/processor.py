"""The processor contract: what every built-in and every plugin processor implements.

A processor acts in one ``Stage``:

- ``CONTEXT``: crops the token ids fed to the model (before the forward pass);
- ``LOGITS``: maps ``(input_ids [B, T], scores [B, V]) -> scores [B, V]`` (temperature, filters,
  penalties); the positional order is Hugging Face's, so a samplekit processor also works inside
  transformers' ``generate``;
- ``SELECTOR``: picks the next token of each row, ``-> LongTensor [B]``.

Every processor works on a batch, keeps shape, dtype and device, never writes its input (it
returns a new tensor), never introduces NaN, and treats each row independently. Parameters are
declared once (``params``) and validated at construction; per-generation state lives in the
object returned by ``start`` and comes back as ``ctx.state``, never on the processor itself, so
one processor object can serve many generations.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from samplekit.params import Param, validate_params


class Stage(str, enum.Enum):
    CONTEXT = "context"
    LOGITS = "logits"
    SELECTOR = "selector"


class RowRandom:
    """Uniform random numbers drawn row by row, each row from its own ``torch.Generator``.

    With one generator per row, a row's draws do not depend on which other rows share its batch,
    so a seeded prompt gives the same output alone or inside any batch. With a single generator
    the whole batch draws from it (``torch.rand`` of shape ``[B, n]``).

    Generators made by ``from_seeds`` belong to this object, so it draws ``AHEAD`` uniforms per
    row at a time and hands them out in order: one tensor operation per row every ``AHEAD``
    steps instead of every step. A CPU generator's uniforms come out of one stream element by
    element (``rand(64)`` equals 64 successive ``rand(1)``), so every row still receives exactly
    the numbers it would have drawn one call at a time. Generators passed in by the caller are
    drawn from only as numbers are asked for.
    """

    AHEAD = 64

    def __init__(self, generators: torch.Generator | Sequence[torch.Generator] | None, batch_size: int):
        if generators is None:
            generators = torch.Generator().manual_seed(torch.seed())
        self.shared = generators if isinstance(generators, torch.Generator) else None
        self.rows = None if self.shared is not None else list(generators)
        if self.rows is not None and len(self.rows) != batch_size:
            raise ValueError(f"{len(self.rows)} generators for a batch of {batch_size} rows")
        self.batch_size = batch_size
        self._ahead: torch.Tensor | None = None  # [B, AHEAD] drawn ahead (own generators only)
        self._used = 0  # columns of _ahead handed out

    @classmethod
    def from_seeds(cls, seeds: Sequence[int]) -> "RowRandom":
        random = cls([torch.Generator().manual_seed(int(s)) for s in seeds], len(seeds))
        random._ahead = torch.empty(len(seeds), 0)  # owned: draw ahead
        return random

    def uniform(self, n: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[B, n]`` float32 uniforms in [0, 1)."""
        out = self._draw(n) if self._ahead is None else self._take(n)
        return out if out.device == torch.device(device) else out.to(device, non_blocking=True)

    def _take(self, n: int) -> torch.Tensor:
        """The next ``n`` numbers of each row's stream, from the numbers drawn ahead."""
        used = self._used
        if used + n <= self._ahead.shape[1] and n:  # the common case: one step's number
            self._used = used + n
            return self._ahead[:, used:used + n]
        parts = []
        while n:
            if self._used == self._ahead.shape[1]:
                if n >= self.AHEAD:  # a large draw (one per token of the vocabulary): direct
                    parts.append(self._draw(n))
                    break
                self._ahead, self._used = self._draw(self.AHEAD), 0
            take = min(n, self._ahead.shape[1] - self._used)
            parts.append(self._ahead[:, self._used:self._used + take])
            self._used += take
            n -= take
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts, dim=1) if parts else self._ahead[:, :0]

    def _draw(self, n: int) -> torch.Tensor:
        if self.shared is not None:
            return torch.rand(self.batch_size, n, generator=self.shared, device=self.shared.device)
        if len(self.rows) == 1:
            return torch.rand(1, n, generator=self.rows[0])
        out = torch.empty(len(self.rows), n)
        for row, g in zip(out, self.rows):  # each row from its own generator, no stacking
            row.uniform_(generator=g)
        return out

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Drop the rows that left the batch (rows: indices to keep, in order)."""
        if self.rows is not None:
            self.rows = [self.rows[i] for i in rows]
        if self._ahead is not None:
            self._ahead = self._ahead[list(rows)]
        self.batch_size = len(rows)


@dataclass(eq=False)
class StepContext:
    """What a processor may read besides ``input_ids`` and ``scores``.

    ``step`` counts the tokens chosen so far in this generation; ``prompt_lengths [B]`` the real
    (unpadded) prompt length of each row; ``attention_mask [B, T]`` is False on padding positions
    of ``input_ids`` (None when there is none); ``state`` is the calling processor's own state (what
    its ``start`` returned).
    """

    random: RowRandom
    batch_size: int
    step: int = 0
    prompt_lengths: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    context_length: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    tokenizer: Any = None
    state: Any = None
    extras: dict = field(default_factory=dict)


def default_context(batch_size: int, generator: torch.Generator | None = None, **kwargs) -> StepContext:
    """A context for a one-off call outside a generation (tests, Hugging Face interop)."""
    return StepContext(random=RowRandom(generator, batch_size), batch_size=batch_size, **kwargs)


class Processor:
    """Base class of every processor. Subclasses set the class attributes and override the
    method of their stage: ``process`` (LOGITS), ``select`` (SELECTOR) or ``crop`` (CONTEXT).

    Declared traits (checked by ``samplekit.testing`` and used by the chain linter):
    ``keeps_argmax`` (a row's largest logit stays among its largest), ``is_filter`` (only sets
    logits to -inf, never changes a finite one), ``vocab_symmetric`` (permuting the vocabulary
    permutes the result), ``needs_history`` (reads ``input_ids``), ``stateful`` (uses ``start``
    and ``accept``), ``random`` (draws from ``ctx.random``).
    """

    name: ClassVar[str]
    stage: ClassVar[Stage] = Stage.LOGITS
    params: ClassVar[tuple[Param, ...]] = ()
    aliases: ClassVar[tuple[str, ...]] = ()
    keeps_argmax: ClassVar[bool] = False
    is_filter: ClassVar[bool] = False
    vocab_symmetric: ClassVar[bool] = False
    needs_history: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    random: ClassVar[bool] = False
    # Optional promises for the chain's candidate fast path (see samplekit.chain), trusted only
    # when declared by the class that defines ``process``: ``candidate_safe`` (``process`` on the
    # top-k candidates' logits ``[B, k]`` equals the dense result restricted to them) and
    # ``commutes_with_top_k`` (a non-decreasing map of each logit, e.g. temperature).
    candidate_safe: ClassVar[bool] = False
    commutes_with_top_k: ClassVar[bool] = False

    def __init__(self, *, _where: str | None = None, **values: Any):
        self.settings = validate_params(self.params, values, _where or self.name)
        for key, value in self.settings.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring: the processor's one-line description."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def traits(cls) -> dict[str, bool]:
        names = ("keeps_argmax", "is_filter", "vocab_symmetric", "needs_history", "stateful", "random")
        return {n: getattr(cls, n) for n in names}

    # -- per-generation life cycle ------------------------------------------------------------
    def start(self, batch_size: int, ctx: StepContext) -> Any:
        """Create this processor's state for one generation (returned later as ``ctx.state``)."""
        return None

    def accept(self, tokens: torch.Tensor, ctx: StepContext) -> None:
        """Told the tokens ``[B]`` chosen at this step (after selection); update ``ctx.state``."""

    def keep_rows(self, state: Any, rows: torch.Tensor) -> Any:
        """Return ``state`` for the rows kept (rows: LongTensor of indices). The default indexes
        tensors, and lists/tuples/dicts of tensors, along their first dimension."""
        return _index_rows(state, rows)

    # -- the work of each stage ----------------------------------------------------------------
    def process(self, input_ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement process()")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext | None = None):
        """Hugging Face's ``(input_ids, scores) -> scores``; a fresh context when none is given."""
        if ctx is None:
            ctx = default_context(scores.shape[0])
            ctx.state = self.start(scores.shape[0], ctx)
        return self.process(input_ids, scores, ctx)


class Selector(Processor):
    """Base of selectors: the last processor of a chain, picking one token id per row."""

    stage = Stage.SELECTOR

    def select(self, input_ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement select()")

    def __call__(self, input_ids, scores, ctx=None):
        if ctx is None:
            ctx = default_context(scores.shape[0])
            ctx.state = self.start(scores.shape[0], ctx)
        return self.select(input_ids, scores, ctx)


class ContextProcessor(Processor):
    """Base of context processors: they crop the ids the model sees, before the forward pass."""

    stage = Stage.CONTEXT

    def crop(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement crop()")

    def window(self, ctx: StepContext) -> int | None:
        """The most positions the model may see, if this processor bounds it (None: no bound)."""
        return None

    def __call__(self, input_ids, scores=None, ctx=None):
        return self.crop(input_ids, ctx or default_context(input_ids.shape[0]))


def _index_rows(state: Any, rows: torch.Tensor) -> Any:
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, rows.to(state.device))
    if isinstance(state, dict):
        return {k: _index_rows(v, rows) for k, v in state.items()}
    if isinstance(state, (list, tuple)) and len(state) and not isinstance(state[0], torch.Tensor):
        return type(state)(state[i] for i in rows.tolist())
    if isinstance(state, (list, tuple)):
        return type(state)(_index_rows(v, rows) for v in state)
    return state
