"""Chain: ordered processors ending in exactly one selector, and ChainRun, one generation through it.

``Chain`` is a reusable description; ``Chain.start`` opens a ``ChainRun`` holding one
generation's state (each row's random stream and step count, each processor's own state). The
decoding loop calls ``run.crop`` before the forward pass and ``run.select`` after it; rows leave
with ``run.keep_rows`` and join with ``run.add_rows``.

How a step is computed is chosen once per run, by the ``StepStrategy`` that a plugin offers
through the ``step_strategy`` hook (samplekit.strategy); without one, or on the first step (whose
outputs are verified), or in checked mode, the step runs densely: every logits processor on the
whole vocabulary, then the selector. A chain built with ``logits_only=True`` has no selector:
``apply`` and ``run.process`` run its logits processors (interop), and it cannot ``select``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from samplekit import checks
from samplekit.env import env_flag
from samplekit.errors import ConfigError, GenerationError, InteropError, ProcessorError
from samplekit.processor import Processor, RowRandom, RowSettings, Selector, Stage, StepContext, run_seeds
from samplekit.selection import EmptyRowError, NonFiniteRowError, RowError
from samplekit.strategy import DENSE, StepStrategy

CHECKED_ENV = "SAMPLEKIT_CHECKED"
MAX_PROCESSORS = 256  # a longer chain is refused: nobody means it, and the linter stays bounded


class Chain:
    """An ordered list of processors: context processors, logits processors, then one selector.

    ``checked=True`` (or ``SAMPLEKIT_CHECKED=1``) verifies the model's logits, every processor's
    output and the selector's tokens at every step (samplekit.checks). Unchecked, shapes are
    verified on the first step only, so checking costs nothing measurable in the loop.
    ``fast_paths=False`` always computes steps densely (no ``step_strategy``).
    """

    def __init__(self, processors: Sequence[Processor], *, checked: bool | None = None, source: str = "chain",
                 fast_paths: bool = True, logits_only: bool = False):
        processors = list(processors)
        _check_composition(processors, source, logits_only)
        self.processors = processors
        self.context = [p for p in processors if p.stage is Stage.CONTEXT]
        self.logits = [p for p in processors if p.stage is Stage.LOGITS]
        self.indexed_logits = [(p, i) for i, p in enumerate(processors) if p.stage is Stage.LOGITS]
        self.selector: Selector | None = None if logits_only else processors[-1]  # type: ignore[assignment]
        self.checked = env_flag(CHECKED_ENV) if checked is None else checked
        self.source = source
        self.fast_paths = fast_paths
        self.logits_only = logits_only
        self._signature: tuple | None = None

    @classmethod
    def from_names(cls, *specs: str | tuple[str, dict], registry=None, **options: Any) -> "Chain":
        """``Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 50}), "multinomial")``."""
        from samplekit.plugins import get_registry

        registry = registry or get_registry()
        made = [registry.create(*((spec, {}) if isinstance(spec, str) else spec)) for spec in specs]
        return cls(made, **options)

    def logits_stage(self) -> "Chain":
        """This chain without its selector (nor context processors): its logits processors, as a
        logits-only chain for interop (the same processor objects)."""
        return Chain(self.logits, checked=self.checked, source=self.source, logits_only=True)

    def describe(self) -> list[dict[str, Any]]:
        """The fully resolved chain, every parameter filled in (``config show``)."""
        return [{p.name: dict(p.settings)} for p in self.processors]

    def __repr__(self) -> str:
        tag = ", logits only" if self.logits_only else ""
        return "Chain(" + " -> ".join(repr(p) for p in self.processors) + tag + ")"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.processors]

    def signature(self) -> tuple:
        """Hashable; chains with equal signatures may share one ChainRun, each row with its own
        values (``start(row_chains=...)``): the same processor classes in the same order, equal in
        every setting that is not declared ``per_row`` (a processor without per-row parameters:
        equal in all), and the same ``checked``, ``fast_paths`` and ``logits_only``."""
        if self._signature is None:
            self._signature = (self.logits_only, self.checked, self.fast_paths,
                               tuple(_processor_signature(p) for p in self.processors))
        return self._signature

    def fill_to(self, template: "Chain") -> "Chain | None":
        """This chain with ``template``'s signature, when a neutral value makes that possible: its
        processors appear in ``template`` in the same order (equal outside their per-row values),
        and each processor of ``template`` it lacks declares ``neutral`` values (temperature 1,
        top-k off, a penalty of 0), with which it is added. None when it cannot be (a processor
        of ``template`` without a neutral value, or one of this chain's that ``template`` lacks).
        A row of the result gives the same tokens as this chain (up to the last-bit rounding
        that separates the step strategies, samplekit.strategies.candidates)."""
        if self.signature() == template.signature():
            return self
        if (self.logits_only, self.checked, self.fast_paths) != (template.logits_only, template.checked,
                                                                 template.fast_paths):
            return None
        mine, filled = list(self.processors), []
        for t in template.processors:
            if mine and _processor_signature(mine[0]) == _processor_signature(t):
                filled.append(mine.pop(0))
            elif t.neutral is not None and all(n in t.per_row_params() for n in t.neutral):
                filled.append(type(t)(**{**t.settings, **t.neutral}))
            else:
                return None
        if mine:
            return None
        return Chain(filled, checked=self.checked, source=self.source, fast_paths=self.fast_paths,
                     logits_only=self.logits_only)

    def row_settings(self, row_chains: Sequence["Chain"], batch_size: int) -> dict:
        """``StepContext.row_settings`` for rows whose own chains are ``row_chains`` (each with this
        chain's signature): for each processor where some row's per-row values differ from this
        chain's, every row's own processor."""
        row_chains = list(row_chains)
        if len(row_chains) != batch_size:
            raise ValueError(f"{len(row_chains)} row chains for {batch_size} rows")
        mine = self.signature()
        for r, c in enumerate(row_chains):
            if c is not self and c.signature() != mine:
                raise ValueError(f"row {r}'s chain {c!r} cannot share a run with {self!r}: their signatures "
                                 "differ (other processors, order, or settings that are not per-row)")
        found: dict[int, RowSettings] = {}
        for i, base in enumerate(self.processors):
            if not base.per_row_params():
                continue
            settings = RowSettings(base, [c.processors[i] for c in row_chains])
            if not settings.differs():
                continue
            if id(base) in found:
                raise ValueError(f"{base!r} appears twice in {self!r}, and rows give it different values; "
                                 "use a separate processor object at each place")
            found[id(base)] = settings
        return found

    def step_strategy(self) -> StepStrategy:
        """The strategy a new run uses: the first one a plugin offers, else dense."""
        if self.checked or not self.fast_paths or self.logits_only:
            return DENSE
        from samplekit.plugins import get_plugin_manager

        return get_plugin_manager().hook.step_strategy(chain=self) or DENSE

    def start(self, batch_size: int, *, generator: torch.Generator | Sequence[torch.Generator] | None = None,
              seeds: Sequence[int] | None = None, trace: int | None = None,
              row_chains: Sequence["Chain"] | None = None, **context: Any) -> "ChainRun":
        """Open one generation over ``batch_size`` rows.

        ``row_chains``: each row's own chain (one per row, each with this chain's ``signature()``),
        whose per-row parameter values that row uses; None: every row uses this chain's values.
        Per-row values follow rows that leave (``keep_rows``) and join (``add_rows``).

        Randomness comes from ``seeds`` (one per row), ``generator`` (one for the batch, or one
        per row), or else per-row seeds drawn once from torch's global generator. ``trace``: record
        each step, keeping this many candidates per stage (samplekit.trace; ``run.last_trace``).
        ``context`` fills the remaining StepContext fields (prompt_lengths, attention_mask,
        context_length, eos_token_ids, tokenizer).
        """
        if generator is None:
            random = RowRandom.from_seeds(run_seeds(batch_size) if seeds is None else seeds)
        elif seeds is not None:
            raise ValueError("pass seeds or generator, not both")
        else:
            random = RowRandom(generator, batch_size)
        ctx = StepContext(random=random, batch_size=batch_size, **context)
        if row_chains is not None:
            ctx.row_settings = self.row_settings(row_chains, batch_size)
        return ChainRun(self, ctx, trace=trace)

    def apply(self, input_ids: torch.Tensor | None, scores: torch.Tensor, *, seed: int | Sequence[int] | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """Processed logits ``[B, V]`` (every logits processor, no selection) for one step with
        fresh state; ``seed`` (row i gets ``seed + i``, or one per row) or ``generator`` feeds
        random processors."""
        seeds = [seed + i for i in range(scores.shape[0])] if isinstance(seed, int) else seed
        return self.start(scores.shape[0], seeds=seeds, generator=generator).process(input_ids, scores)

    def select(self, input_ids: torch.Tensor | None, scores: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Next tokens ``[B]``: process ``scores`` and select, drawing only from ``generator``."""
        return self.start(scores.shape[0], generator=generator).select(input_ids, scores)


class ChainRun:
    """One generation through a chain: its rows' random streams and step counts, and each
    processor's state. A strategy computes each step (samplekit.strategy). ``varies``: whether
    some row now in the run carries per-row values other than the chain's own (``row_chains``)."""

    def __init__(self, chain: Chain, ctx: StepContext, trace: int | None = None):
        self.chain, self.ctx = chain, ctx
        self.tracer = None
        if trace:
            from samplekit.trace import Tracer

            self.tracer = Tracer(trace)
        self.last_trace = None  # with tracing: each row's StepTrace for the last step
        self.states = [p.start(ctx.batch_size, ctx) for p in chain.processors]
        self.logits = chain.indexed_logits
        self.context = [(p, i) for i, p in enumerate(chain.processors) if p.stage is Stage.CONTEXT]
        self.accepting = [(p, i) for i, p in enumerate(chain.processors) if type(p).accept is not Processor.accept]
        self.selector_index = len(chain.processors) - 1
        self.strategy = chain.step_strategy()
        self.verified = False  # the first step runs densely and verifies every output
        self._follow_values()

    def _follow_values(self) -> None:
        """Choose the strategy for the rows now in the run: one that does not read per-row values
        (``StepStrategy.per_row_values``) serves only rows that all use the chain's own values."""
        self.varies = any(s.differs() for s in self.ctx.row_settings.values())
        self._strategy = self.strategy if not self.varies or self.strategy.per_row_values else DENSE

    @property
    def step(self) -> int:
        return self.ctx.step

    @property
    def active_strategy(self) -> StepStrategy:
        """The strategy computing the steps of the rows now in the run (``strategy``, or dense
        when rows carry values it cannot read: ``StepStrategy.per_row_values``)."""
        return self._strategy

    # -- the step loop ------------------------------------------------------------------------
    def crop(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The ids to feed the model: every context processor applied in order."""
        for p, i in self.context:
            self.ctx.state = self.states[i]
            input_ids = p.crop(input_ids, self.ctx)
        return input_ids

    def select(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        """Choose the next token of each row ``[B]``, tell stateful processors, step on."""
        if self.chain.selector is None:
            raise InteropError(f"{self.chain!r} is logits-only: it has no selector to choose tokens with")
        try:
            if self.tracer is not None:
                tokens = self._select_traced(input_ids, scores)
            else:
                tokens = self._strategy.select(self, input_ids, scores) if self.verified else None
                if tokens is None:
                    tokens = self._select_dense(input_ids, scores)
        except Exception as exc:
            self._reraise(exc)
        self.accept(tokens)
        return tokens

    def process(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        """Every logits processor in order; ``scores [B, V]`` in, new ``[B, V]`` out. With a
        logits-only chain, call ``accept`` with the tokens chosen before the next step."""
        try:
            return self._process(input_ids, scores, verify=self.chain.checked or not self.verified)
        except Exception as exc:
            self._reraise(exc)

    def accept(self, tokens: torch.Tensor) -> None:
        """Tell stateful processors the tokens ``[B]`` chosen at this step, and step on."""
        ctx = self.ctx
        if ctx.finished:
            ctx.finished = {}
        for p, i in self.accepting:
            ctx.state = self.states[i]
            p.accept(tokens, ctx)
        ctx.step += 1

    # -- rows leaving and joining --------------------------------------------------------------
    def keep_rows(self, rows: torch.Tensor) -> None:
        """Continue with only the rows at indices ``rows`` (finished rows leave the batch)."""
        self.states = [p.keep_rows(s, rows) for p, s in zip(self.chain.processors, self.states)]
        self.ctx.keep_rows(rows)
        if self.ctx.row_settings:
            self._follow_values()

    def add_rows(self, count: int, *, seeds: Sequence[int] | None = None,
                 generator: Sequence[torch.Generator] | None = None, row_chains: Sequence[Chain] | None = None,
                 **context: Any) -> None:
        """Rows that join the running generation, after the current rows: each processor starts
        their state (``start`` on them alone) and merges it (``join_rows``). ``seeds`` or one
        ``generator`` per row (default: seeds from torch's global generator); ``row_chains``:
        each joining row's own chain (equal ``signature()``), whose per-row values it uses (None:
        the run's chain's); ``context``: their prompt_lengths and attention_mask. The caller
        sets the joined batch's ``ctx.attention_mask`` before the next step."""
        ctx = self.ctx
        random = RowRandom(generator, count) if generator is not None else \
            RowRandom.from_seeds(run_seeds(count) if seeds is None else seeds)
        joining = StepContext(random=random, batch_size=count, context_length=ctx.context_length,
                              eos_token_ids=ctx.eos_token_ids, tokenizer=ctx.tokenizer, extras=ctx.extras, **context)
        if row_chains is not None:
            joining.row_settings = self.chain.row_settings(row_chains, count)
        new = [p.start(count, joining) for p in self.chain.processors]
        self.states = [p.join_rows(s, n) for p, s, n in zip(self.chain.processors, self.states, new)]
        ctx.join(joining)
        if ctx.row_settings:
            self._follow_values()

    # -- for strategies ------------------------------------------------------------------------
    def apply(self, processors: list[tuple[Processor, int]], input_ids, scores: torch.Tensor) -> torch.Tensor:
        """``processors`` (pairs of processor and chain index) in order, each with its own state."""
        ctx = self.ctx
        for p, i in processors:
            ctx.state = self.states[i]
            scores = p.process(input_ids, scores, ctx)
        return scores

    def selector_context(self) -> StepContext:
        """The context with the selector's own state, to call the selector with."""
        self.ctx.state = self.states[self.selector_index]
        return self.ctx

    def window(self) -> int | None:
        """The most positions the model may see (the smallest bound of the context processors)."""
        bounds = [w for p, i in self.context if (w := p.window(self.ctx)) is not None]
        return min(bounds) if bounds else self.ctx.context_length

    # -- the dense path and checked mode ---------------------------------------------------------
    def _select_dense(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        verify, full = self.chain.checked or not self.verified, self.chain.checked
        if full:
            checks.verify_logits(scores, self.ctx.step)
        scores = self._process(input_ids, scores, verify)
        tokens = self.chain.selector.select(input_ids, scores, self.selector_context())
        if full:
            checks.verify_tokens(self.chain.selector, scores, tokens, self.ctx.step)
        self.verified = True
        return tokens

    def _select_traced(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        """The dense path, recording every stage (samplekit.trace)."""
        tracer, ctx = self.tracer, self.ctx
        tracer.begin(scores)
        for p, i in self.logits:
            ctx.state = self.states[i]
            scores = p.process(input_ids, scores, ctx)
            tracer.stage(p.name, scores)
        tokens = self.chain.selector.select(input_ids, scores, self.selector_context())
        self.last_trace = tracer.finish(tokens, ctx.steps.tolist())
        return tokens

    def _process(self, input_ids, scores: torch.Tensor, verify: bool) -> torch.Tensor:
        if not verify:
            return self.apply(self.logits, input_ids, scores)
        ctx, full = self.ctx, self.chain.checked
        for p, i in self.logits:
            ctx.state = self.states[i]
            before = scores.clone() if full else None
            out = p.process(input_ids, scores, ctx)
            checks.verify_scores(p, scores, out, before, ctx.step)
            scores = out
        if self.chain.selector is None:
            self.verified = True
        return scores

    def _reraise(self, exc: Exception):
        explained = self._explain(exc)
        if explained is exc:
            raise exc
        raise explained from (None if isinstance(exc, RowError) else exc)

    def _explain(self, exc: Exception) -> Exception:
        """A row error as a GenerationError naming the step, the rows and the chain; a plugin
        processor's exception as a ProcessorError naming it; anything else as it is."""
        order = " -> ".join(self.chain.names)
        step = self.ctx.step
        if isinstance(exc, EmptyRowError):
            return GenerationError(
                f"step {step}: every logit of row(s) {exc.rows} is -inf after the chain ({order}); nothing can "
                "be selected. Loosen the filters (banned tokens, top_k, min_p, ...) so at least one token survives."
            )
        if isinstance(exc, NonFiniteRowError):
            return GenerationError(
                f"step {step}: row(s) {exc.rows} hold NaN or +inf logits at the selector of the chain ({order}); "
                "the model's weights or a processor produced them (SAMPLEKIT_CHECKED=1 names which)"
            )
        culprit = _raised_by(exc, self.chain.processors)
        provider = getattr(culprit, "provider", None)
        if culprit is not None and provider is not None and not provider.builtin:
            return ProcessorError(f"step {step}: {checks.who(culprit)} raised {type(exc).__name__}: "
                                  f"{str(exc)[:300]}; this is a bug in that plugin: report it to its authors, "
                                  "or leave it out of the chain")
        return exc


def _processor_signature(p: Processor) -> tuple:
    """``p``'s class and its settings that are not per-row (hashable)."""
    settings = getattr(p, "settings", None)
    if not isinstance(settings, dict):
        return (type(p), id(p))  # built without declared settings: only itself is equal to it
    per_row = set(p.per_row_params())
    return (type(p), tuple((k, _freeze(v)) for k, v in sorted(settings.items()) if k not in per_row))


def _freeze(value: Any) -> Any:
    """A hashable form of a parameter value (mappings, lists, JSON)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted(((_freeze(k), _freeze(v)) for k, v in value.items()), key=repr)))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_freeze(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (type(value).__name__, value)


def _raised_by(exc: BaseException, processors: list[Processor]) -> Processor | None:
    """The innermost processor whose method was running when ``exc`` was raised."""
    mine = {id(p): p for p in processors}
    found, tb = None, exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if id(owner) in mine and mine[id(owner)] is owner:
            found = owner
        tb = tb.tb_next
    return found


def _check_composition(processors: list[Processor], source: str, logits_only: bool) -> None:
    if len(processors) > MAX_PROCESSORS:
        raise ConfigError(f"{source}: the chain has {len(processors)} processors; at most {MAX_PROCESSORS} are allowed")
    for i, p in enumerate(processors):
        if not isinstance(p, Processor):
            raise ConfigError(f"{source}: chain[{i}] is {str(p)[:80]}, not a samplekit Processor")
    selectors = [i for i, p in enumerate(processors) if isinstance(p, Selector)]
    if logits_only:
        if selectors:
            raise ConfigError(f"{source}: a logits-only chain has no selector; found chain[{selectors[0]}]."
                              f"{processors[selectors[0]].name}")
        return
    if not processors:
        raise ConfigError(f"{source}: the chain is empty; it needs at least a selector (greedy or multinomial)")
    if not selectors:
        raise ConfigError(
            f"{source}: the chain has no selector; end it with exactly one of greedy, multinomial "
            "(`samplekit processors` lists every selector)"
        )
    if len(selectors) > 1 or selectors[0] != len(processors) - 1:
        names = ", ".join(f"chain[{i}].{processors[i].name}" for i in selectors)
        raise ConfigError(f"{source}: a chain has exactly one selector and it is last; found {names}")

