"""The processor contract: what every built-in and every plugin processor implements.

A processor acts in one ``Stage``:

- ``CONTEXT``: crops the token ids fed to the model (before the forward pass);
- ``LOGITS``: maps ``(input_ids [B, T], scores [B, V]) -> scores [B, V]`` (temperature, filters,
  penalties), in Hugging Face's positional order;
- ``SELECTOR``: picks the next token of each row, ``-> LongTensor [B]``.

Every processor works on a batch, keeps shape, dtype and device, never writes its input (it
returns a new tensor), never introduces NaN, and treats each row independently. Parameters are
declared once (``params``) and validated at construction.

Rows come and go. Per-generation state lives in the object returned by ``start`` and comes
back as ``ctx.state``, never on the processor itself, so one processor object serves many
generations. Rows that finish leave (``keep_rows``); rows may join a running generation at any
step (their state from ``start`` on those rows alone, merged by ``join_rows``). Each row has its
own step count (``ctx.steps``: tokens it has chosen so far) and prompt length. A row's output
must not depend on which rows it shares the batch with, nor on when it joined: the conformance
kit checks exactly that.

Rows carry their own values. A parameter declared ``Param(..., per_row=True)`` may differ
between the rows of one run: requests whose chains have the same processors in the same order,
equal in every other parameter (``Chain.signature()``), share one chain run. Such a processor
reads the value with ``self.row_value(ctx, "name", scores)``: its own scalar when every row has
the same value, else a ``[B, 1]`` tensor on ``scores``' device (float32 for numbers, int64 for
integers, bool for booleans), made from the rows' Python values exactly as the scalar would be
converted, so a row's result is the same alone or among rows with other values.
``self.row_values(ctx, "name")`` gives the list of every row's value (any type), and
``self.row_processors(ctx)`` each row's own processor object; ``self.by_row_values(ctx,
compute)`` runs a computation once per distinct set of values, each row taking its own (exact
for anything row-wise). A processor without per-row parameters keeps working unchanged: rows
share its run only when all its values are equal.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from samplekit.errors import InteropError
from samplekit.params import Param, validate_params


class Stage(str, enum.Enum):
    CONTEXT = "context"
    LOGITS = "logits"
    SELECTOR = "selector"


def run_seeds(batch_size: int) -> list[int]:
    """Per-row seeds for an unseeded run: one draw of a base seed from torch's global
    generator (which is advanced, never reseeded), so ``torch.manual_seed(n)`` before a
    generation reproduces it and the caller's random stream continues deterministically."""
    base = int(torch.randint(0, 2**62, (1,)).item())
    return [base + i for i in range(batch_size)]


class RowRandom:
    """Uniform random numbers drawn row by row, each row from its own ``torch.Generator``.

    With one generator per row, a row's draws do not depend on which other rows share its batch,
    so a seeded prompt gives the same output alone or inside any batch, and rows can join
    (``join``) or leave (``keep_rows``) at any step. With a single generator the whole batch
    draws from it (``torch.rand`` of shape ``[B, n]``). Without either, the rows are seeded from
    torch's global generator (``run_seeds``).

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
            generators = [torch.Generator().manual_seed(s) for s in run_seeds(batch_size)]
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

    def _exactly(self, n: int) -> torch.Tensor:
        """The next ``n`` numbers of each row's stream, drawing nothing further ahead."""
        have = self._ahead[:, self._used:self._used + n]
        self._used += have.shape[1]
        rest = n - have.shape[1]
        return have if not rest else torch.cat([have, self._draw(rest)], dim=1)

    def _draw(self, n: int) -> torch.Tensor:
        if self.shared is not None:
            return torch.rand(self.batch_size, n, generator=self.shared, device=self.shared.device)
        rows = self.rows
        if len(rows) == 1:
            return torch.rand(1, n, generator=rows[0])
        out = torch.empty(len(rows), n)
        for row, g in zip(out, rows):  # each row from its own generator, no stacking
            row.uniform_(generator=g)
        return out

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Drop the rows that left the batch (rows: indices to keep, in order)."""
        if self.rows is not None:
            self.rows = [self.rows[i] for i in rows]
        if self._ahead is not None:
            self._ahead = self._ahead[list(rows)]
        self.batch_size = len(rows)

    def join(self, other: "RowRandom") -> None:
        """Append ``other``'s rows (rows joining a running generation). Both must draw per row;
        each joining row continues its own stream from its start."""
        if self.rows is None or other.rows is None:
            raise ValueError("rows can join only a generation that draws per row (seeds or one generator "
                             "per row), not one sharing a single generator")
        if (self._ahead is None) != (other._ahead is None):
            raise ValueError("rows joining must draw like the running rows: all from seeds, or all from "
                             "generators passed in")
        if self._ahead is not None:  # line the new rows' numbers up with the columns still to hand out
            width, fresh = self._ahead.shape[1], other._exactly(self._ahead.shape[1] - self._used)
            pad = fresh.new_zeros(fresh.shape[0], width - fresh.shape[1])
            self._ahead = torch.cat([self._ahead, torch.cat([pad, fresh], dim=1)])
        self.rows += other.rows
        self.batch_size += other.batch_size


@dataclass(eq=False)
class StepContext:
    """What a processor may read besides ``input_ids`` and ``scores``.

    ``steps [B]`` counts the tokens each row has chosen so far (rows that joined later have
    fewer); ``fewest_steps`` is its minimum, free to read. ``step`` counts the run's steps (for
    messages). ``prompt_lengths [B]`` is each row's real (unpadded) prompt length;
    ``attention_mask [B, T]`` is False on padding positions of ``input_ids`` (None when there
    is none); ``state`` is the calling processor's own state (what its ``start`` returned).
    ``row_settings`` holds, for a processor whose rows carry their own values, each row's own
    processor (read it through ``Processor.row_value``; empty when every row uses the chain's).
    A processor may end rows after this step with ``finish(rows, reason)`` (from ``accept``:
    a constraint that is complete, say); the token just chosen is kept.
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
    first_steps: torch.Tensor | None = None  # [B] the run step at which each row started; None: all at 0
    finished: dict[int, str] = field(default_factory=dict)  # row -> reason, set by finish()
    row_settings: dict[int, "RowSettings"] = field(default_factory=dict)  # id(processor) -> its rows' own
    _latest_start: int = 0

    @property
    def steps(self) -> torch.Tensor:
        """``[B]`` int64 (CPU): the tokens each row has chosen so far."""
        if self.first_steps is None:
            return torch.full((self.batch_size,), self.step, dtype=torch.long)
        return self.step - self.first_steps

    @property
    def fewest_steps(self) -> int:
        """The smallest per-row step count: a processor that only acts early can skip its work."""
        return self.step - self._latest_start

    def finish(self, rows: Sequence[int], reason: str) -> None:
        """End ``rows`` (indices in this batch) after the current step, with ``reason`` as their
        finish reason (for example ``"constraint"``)."""
        for row in rows:
            self.finished.setdefault(int(row), reason)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Follow the batch when rows leave (``rows``: indices kept, in order)."""
        self.random.keep_rows(rows.tolist())
        self.batch_size = len(rows)
        for name in ("prompt_lengths", "attention_mask", "first_steps"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, rows.to(value.device)))
        self._latest_start = int(self.first_steps.max()) if self.first_steps is not None and len(rows) else 0
        if self.row_settings:
            kept = rows.tolist()
            self.row_settings = {k: v.keep(kept) for k, v in self.row_settings.items()}

    def join(self, other: "StepContext") -> None:
        """Append the rows of ``other`` (a context for rows joining at this step)."""
        first = self.first_steps if self.first_steps is not None else torch.zeros(self.batch_size, dtype=torch.long)
        self.first_steps = torch.cat([first, torch.full((other.batch_size,), self.step, dtype=torch.long)])
        self._latest_start = self.step
        if self.prompt_lengths is not None or other.prompt_lengths is not None:
            self.prompt_lengths = torch.cat([_lengths(self), _lengths(other).to(_lengths(self).device)])
        self.random.join(other.random)
        if self.row_settings or other.row_settings:
            merged = {}
            for key in {**self.row_settings, **other.row_settings}:
                mine, theirs = self.row_settings.get(key), other.row_settings.get(key)
                base = (mine or theirs).base
                merged[key] = (mine or RowSettings(base, [base] * self.batch_size)).joined(
                    theirs or RowSettings(base, [base] * other.batch_size))
            self.row_settings = merged
        self.batch_size += other.batch_size
        self.attention_mask = None  # the caller sets the joined batch's mask before the next step


def _lengths(ctx: StepContext) -> torch.Tensor:
    return ctx.prompt_lengths if ctx.prompt_lengths is not None else torch.zeros(ctx.batch_size, dtype=torch.long)


class RowSettings:
    """Each row's own processor at one place of a shared chain run: ``base`` is the run's chain's
    processor there, ``own[r]`` row r's (its own chain's; ``base`` itself for rows without one).
    Built by ChainRun; processors read it through ``Processor.row_value``."""

    __slots__ = ("base", "own", "_shared", "_tensors", "_differs")

    def __init__(self, base: "Processor", own: Sequence["Processor"]):
        self.base, self.own = base, list(own)
        self._shared: dict[str, tuple[bool, Any]] = {}  # name -> (all rows equal, that value)
        self._tensors: dict[tuple, torch.Tensor] = {}  # (name, derive, device) -> [B, 1]
        self._differs: bool | None = None

    def values(self, name: str) -> list:
        return [getattr(p, name) for p in self.own]

    def shared(self, name: str) -> tuple[bool, Any]:
        """(True, the value) when every row has the same value of ``name``, else (False, None)."""
        found = self._shared.get(name)
        if found is None:
            values = self.values(name)
            first = values[0] if values else getattr(self.base, name)
            found = self._shared[name] = (all(_same_value(v, first) for v in values), first)
        return found

    def differs(self) -> bool:
        """Whether some row's per-row value differs from ``base``'s (the chain's own)."""
        if self._differs is None:
            names, base = self.base.per_row_params(), self.base
            self._differs = any(not _same_value(getattr(p, n), getattr(base, n)) for p in self.own if p is not base
                                for n in names)
        return self._differs

    def tensor(self, name: str, like: torch.Tensor | None, derive=None) -> torch.Tensor:
        """``[B, 1]``: each row's value (through ``derive``), typed as a scalar would convert."""
        device = like.device if like is not None else torch.device("cpu")
        key = (name, derive, device)
        found = self._tensors.get(key)
        if found is None:
            values = self.values(name)
            if derive is not None:
                values = [derive(v) for v in values]
            kind = torch.bool if isinstance(values[0], bool) else torch.long if isinstance(values[0], int) \
                else torch.float32
            found = self._tensors[key] = torch.tensor(values, dtype=kind).view(-1, 1).to(device)
        return found

    def keep(self, rows: Sequence[int]) -> "RowSettings":
        return RowSettings(self.base, [self.own[i] for i in rows])

    def joined(self, other: "RowSettings") -> "RowSettings":
        return RowSettings(self.base, self.own + other.own)


def _freeze_value(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((repr(k), _freeze_value(v)) for k, v in value.items()))))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_freeze_value(v) for v in value))
    return (type(value).__name__, value if getattr(type(value), "__hash__", None) else repr(value))


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not equal
        return False


def default_context(batch_size: int, generator: torch.Generator | None = None, **kwargs) -> StepContext:
    """A context for a one-off call outside a generation (tests, one-step interop)."""
    return StepContext(random=RowRandom(generator, batch_size), batch_size=batch_size, **kwargs)


class Processor:
    """Base class of every processor. Subclasses set the class attributes and override the
    method of their stage: ``process`` (LOGITS), ``select`` (SELECTOR) or ``crop`` (CONTEXT).

    Per-row values: declare a parameter ``Param(..., per_row=True)`` and read it in the stage
    method (and in ``start``) with ``self.row_value(ctx, name, scores)``, never as
    ``self.name``; the conformance kit checks that each row's result is the same alone and
    among rows with other values. ``neutral`` names per-row values that make the processor a
    no-op, so a chain without it can share a run with one that has it.

    Declared traits (checked by ``samplekit.testing`` and used by the chain linter):
    ``keeps_argmax`` (a row's largest logit stays among its largest), ``is_filter`` (only sets
    logits to -inf, never changes a finite one), ``vocab_symmetric`` (permuting the vocabulary
    permutes the result), ``needs_history`` (reads ``input_ids``), ``stateful`` (uses ``start``
    and ``accept``), ``random`` (draws from ``ctx.random``), ``shared_state`` (what ``start``
    returns serves every row: ``keep_rows`` and ``join_rows`` keep it as it is).
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
    shared_state: ClassVar[bool] = False
    # Optional promises for the step strategies' fast paths (samplekit.strategies), trusted only
    # when declared by the class that defines ``process``, and checked by the conformance kit:
    # ``candidate_safe`` (``process`` on candidate logits ``[B, n]`` in token-id order equals the
    # dense result restricted to them) and ``commutes_with_top_k`` (a non-decreasing map of each
    # logit that reads only the logit and its row's maximum, e.g. temperature).
    candidate_safe: ClassVar[bool] = False
    commutes_with_top_k: ClassVar[bool] = False
    # Promises that let a step strategy recognise plain sampling without knowing the classes
    # (samplekit-native's C kernel), trusted and checked the same way: ``samples_by_inverse_cdf``
    # (a selector whose ``select`` draws one uniform u per row, ``ctx.random.uniform(1)``, and
    # returns ``inverse_cdf_sample(scores, u)``: exact softmax sampling in token-id order) and
    # ``divides_logits_by()`` (a method, not defined here: T > 0 when ``process`` returns
    # ``scores / T`` on every row, else None). A top-k declares ``keeps_top(vocab_size)``; a top-p
    # ``nucleus_p()`` and a min-p ``min_p_ratio()`` (p when ``process`` is exactly built-in top-p's
    # or min-p's filter with that p, else None).
    samples_by_inverse_cdf: ClassVar[bool] = False
    # Values of this processor's per-row parameters that make it a no-op (temperature 1, top-k
    # off, a penalty of 0): a chain without it may share a run with chains that have it
    # (``Chain.fill_to``). None: it has no such values.
    neutral: ClassVar[dict[str, Any] | None] = None
    # The parameter a bare config value sets (``top_p: 0.9`` is ``top_p: {p: 0.9}``). None: the
    # only parameter, when there is exactly one.
    primary: ClassVar[str | None] = None

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

    def tracks_generation(self) -> bool:
        """Whether the output depends on the generation so far beyond ``input_ids``: the rows'
        step counts (``ctx.steps``) or state that ``accept``/``select`` update. Such a processor
        cannot be called bare as ``(input_ids, scores)``. Default: it overrides ``accept``."""
        return type(self).accept is not Processor.accept

    # -- values per row -------------------------------------------------------------------------
    @classmethod
    def per_row_params(cls) -> tuple[str, ...]:
        """The names of the parameters declared ``per_row`` (they may differ between rows of a run)."""
        return tuple(p.name for p in cls.params if p.per_row)

    def row_value(self, ctx: StepContext | None, name: str, like: torch.Tensor | None = None, derive=None):
        """Parameter ``name`` for the rows of ``ctx``: ``derive(value)`` (or the value) as a Python
        scalar when every row has the same, else a ``[B, 1]`` tensor on ``like``'s device (float32
        for numbers, int64 for integers, bool for booleans) made from each row's
        ``derive(value)``: compute what depends on the value only (``1 - p``) in ``derive`` so
        that both forms round alike. ``derive`` should be a module-level function (the tensor is
        cached per function until rows join or leave)."""
        rows = ctx.row_settings.get(id(self)) if ctx is not None and ctx.row_settings else None
        if rows is not None:
            equal, value = rows.shared(name)
            if not equal:
                return rows.tensor(name, like, derive)
        else:
            value = getattr(self, name)
        return value if derive is None else derive(value)

    def row_values(self, ctx: StepContext | None, name: str) -> list:
        """Every row's value of ``name`` (one per row of ``ctx``, any type)."""
        rows = ctx.row_settings.get(id(self)) if ctx is not None and ctx.row_settings else None
        if rows is not None:
            return rows.values(name)
        return [getattr(self, name)] * (ctx.batch_size if ctx is not None else 1)

    def row_processors(self, ctx: StepContext | None) -> list["Processor"]:
        """Each row's own processor (``self`` for rows that use the chain's)."""
        rows = ctx.row_settings.get(id(self)) if ctx is not None and ctx.row_settings else None
        return list(rows.own) if rows is not None else [self] * (ctx.batch_size if ctx is not None else 1)

    def by_row_values(self, ctx: StepContext | None, compute) -> torch.Tensor:
        """``compute(values)`` for each distinct set of per-row values (``values``: this
        processor's per-row parameters as a dict of Python values; ``compute`` returns a result
        ``[B, ...]`` for the whole batch, as if every row had them), each row taking its own: exact
        by construction for any row-wise computation, at one call per distinct set (one call
        when every row shares them)."""
        names = self.per_row_params()
        rows = ctx.row_settings.get(id(self)) if ctx is not None and ctx.row_settings else None
        if rows is None:
            return compute({n: getattr(self, n) for n in names})
        keys = [tuple((n, _freeze_value(getattr(p, n))) for n in names) for p in rows.own]
        distinct = list(dict.fromkeys(keys))
        first = rows.own[keys.index(distinct[0])]
        out = compute({n: getattr(first, n) for n in names})
        if len(distinct) == 1:
            return out
        for key in distinct[1:]:
            own = rows.own[keys.index(key)]
            mine = torch.tensor([k == key for k in keys], device=out.device)
            out = torch.where(mine.view(-1, *[1] * (out.dim() - 1)), compute({n: getattr(own, n) for n in names}), out)
        return out

    def shares_values(self, ctx: StepContext | None) -> bool:
        """Whether every row of ``ctx`` has this processor's own per-row values (a fast path that
        reads ``self``'s values directly may run)."""
        rows = ctx.row_settings.get(id(self)) if ctx is not None and ctx.row_settings else None
        return rows is None or not rows.differs()

    # -- per-generation life cycle ------------------------------------------------------------
    def start(self, batch_size: int, ctx: StepContext) -> Any:
        """Create this processor's state for ``batch_size`` rows (returned later as ``ctx.state``).
        Called when a generation starts, and for rows that join it (then merged by ``join_rows``)."""
        return None

    def accept(self, tokens: torch.Tensor, ctx: StepContext) -> None:
        """Told the tokens ``[B]`` chosen at this step (after selection); update ``ctx.state``."""

    def keep_rows(self, state: Any, rows: torch.Tensor) -> Any:
        """Return ``state`` for the rows kept (rows: LongTensor of indices). The default indexes
        tensors, and lists/tuples/dicts of tensors, along their first dimension."""
        return state if self.shared_state else index_rows(state, rows)

    def join_rows(self, state: Any, joining: Any) -> Any:
        """Return the state of the running rows followed by the joining rows (``joining`` is
        what ``start`` returned for them). The default concatenates along the first dimension
        what ``keep_rows`` indexes."""
        return state if self.shared_state else concat_rows(state, joining)

    # -- the work of each stage ----------------------------------------------------------------
    def process(self, input_ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement process()")

    def _bare_context(self, scores: torch.Tensor) -> StepContext:
        if self.tracks_generation():
            raise InteropError(
                f"{self.name} depends on the generation so far (the tokens each row has chosen, or state "
                "kept between steps), which a bare (input_ids, scores) call cannot know: run it through "
                "samplekit.generate, or give a ChainRun's context (ctx=)"
            )
        ctx = default_context(scores.shape[0])
        ctx.state = self.start(scores.shape[0], ctx)
        return ctx

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext | None = None):
        """``(input_ids, scores) -> scores`` for one step, with fresh state when no ``ctx`` is
        given; refused (InteropError) for a processor that ``tracks_generation``."""
        return self.process(input_ids, scores, ctx or self._bare_context(scores))


class Selector(Processor):
    """Base of selectors: the last processor of a chain, picking one token id per row. A
    selector checks each row with ``samplekit.selection.check_rows`` (it reads each row's
    maximum anyway) and draws only from ``ctx.random``."""

    stage = Stage.SELECTOR

    def select(self, input_ids: torch.Tensor, scores: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement select()")

    def __call__(self, input_ids, scores, ctx=None):
        return self.select(input_ids, scores, ctx or self._bare_context(scores))


class ContextProcessor(Processor):
    """Base of context processors: they crop the ids the model sees, before the forward pass.

    ``keeps_last_window`` declares that ``crop`` returns exactly the last ``window(ctx)``
    columns (all of them when the window is None): the engine then keeps its KV cache."""

    stage = Stage.CONTEXT
    keeps_last_window: ClassVar[bool] = False

    def crop(self, input_ids: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement crop()")

    def window(self, ctx: StepContext) -> int | None:
        """The most positions the model may see, if this processor bounds it (None: no bound)."""
        return None

    def __call__(self, input_ids, scores=None, ctx=None):
        return self.crop(input_ids, ctx or default_context(input_ids.shape[0]))


def index_rows(state: Any, rows: torch.Tensor) -> Any:
    """``state`` for the rows at ``rows``: tensors indexed along dim 0, lists of non-tensors
    per item, dicts, lists and tuples of tensors element by element; anything else kept."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, rows.to(state.device))
    if isinstance(state, dict):
        return {k: index_rows(v, rows) for k, v in state.items()}
    if isinstance(state, (list, tuple)) and len(state) and not isinstance(state[0], torch.Tensor):
        return type(state)(state[i] for i in rows.tolist())
    if isinstance(state, (list, tuple)):
        return type(state)(index_rows(v, rows) for v in state)
    return state


def concat_rows(state: Any, joining: Any) -> Any:
    """``state`` followed by ``joining``, the inverse of ``index_rows``: tensors concatenated
    along dim 0, lists of non-tensors extended, dicts, lists and tuples of tensors element by
    element; other values must be equal on both sides (row-free settings)."""
    if state is None and joining is None:
        return None
    if isinstance(state, torch.Tensor) and isinstance(joining, torch.Tensor):
        return torch.cat([state, joining.to(state.device)])
    if isinstance(state, dict) and isinstance(joining, dict) and state.keys() == joining.keys():
        return {k: concat_rows(v, joining[k]) for k, v in state.items()}
    if isinstance(state, (list, tuple)) and isinstance(joining, (list, tuple)):
        per_item = (state and not isinstance(state[0], torch.Tensor)) or \
                   (joining and not isinstance(joining[0], torch.Tensor))
        if per_item or not state or not joining:
            return type(state)([*state, *joining])
        if len(state) == len(joining):
            return type(state)(concat_rows(a, b) for a, b in zip(state, joining))
    if state is joining or _equal(state, joining):
        return state
    raise TypeError(f"cannot join states {type(state).__name__} and {type(joining).__name__} by default; "
                    "override join_rows (or declare shared_state = True)")


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not equal
        return False
