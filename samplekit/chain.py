"""Chain: ordered processors ending in exactly one selector.

``Chain`` is a reusable description; ``Chain.start`` opens a ``ChainRun`` holding one
generation's state (step counter, random generators, each processor's own state). The decoding
loop calls ``run.crop`` before the forward pass and ``run.select`` after it.

The candidate fast path. Most of a sampler's cost is full-vocabulary work, yet after a top-k
only k logits are finite, and sampling among them is exact. So when a chain holds a top-k
(a processor with ``keeps_top(vocab_size) -> k | None``), ``ChainRun.select`` runs:

1. ``topk(k + 1)`` of the raw scores: the only full-vocabulary operation;
2. the processors before the top-k, on those k + 1 values: each must declare
   ``commutes_with_top_k`` (a non-decreasing map of each logit that reads nothing but the
   logit and its row's maximum, e.g. temperature), so the top k + 1 are the same tokens either way;
3. a tie check: if a row's k-th and (k+1)-th values are equal (and finite), the dense top-k
   would keep the tie: this step runs the dense path instead (exact, rare);
4. the k candidates, sorted by token id, through the processors after the top-k: each must
   have ``process_candidates(input_ids, values, indices, ctx)`` or declare ``candidate_safe``
   (its ``process`` on the candidate logits ``[B, k]`` equals the dense result restricted to
   them: it reads only the finite logits' values, not token ids, the vocabulary size or the
   -inf entries);
5. the selector's ``select_candidates(input_ids, values, indices, ctx)``, never with a row of
   only -inf: the chain reads each row's maximum with the tie check (step 3), and checks again
   after processors of step 4, raising the same error naming the empty rows.

A filter whose kept set depends on the whole row (top-p: the nucleus's mass) can find its own
candidates instead: ``filter_candidates(input_ids, scores, ctx) -> (values, indices) | None``
returns candidates that rebuild exactly what its ``process`` returns (the conformance kit
checks this), or None when it cannot tell cheaply. Then the processors before it run on the
whole vocabulary (any processor may), the filter finds its candidates, and steps 4 and 5
follow; on None the step continues densely from the filter on.

For exactly temperature -> top_k -> multinomial on the CPU, steps 1 to 5 run in an optional C
kernel instead (``samplekit.native``), with the same arithmetic and the same fallbacks.

Candidates in token-id order make multinomial's inverse CDF add the same non-zero terms in the
same order as the dense path, so a seed draws the same token. (Up to rounding: a logit's exp may
come from the vectorised or the scalar kernel depending on its position, and normalising
processors such as top-p sum fewer zeros; the last-bit differences change a draw only when the
uniform falls within them of a CDF step, about once in 10^7 draws.) A chain
that does not qualify, ``checked`` chains, the first step (whose outputs are verified densely)
and ``Chain(..., candidates=False)`` use the dense path; ``ChainRun.process`` is always dense.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from samplekit.errors import ConfigError, GenerationError, ProcessorContractError
from samplekit.processor import Processor, RowRandom, Selector, Stage, StepContext
from samplekit.processors.selectors import EmptyRowError, check_rows_not_empty

CHECKED_ENV = "SAMPLEKIT_CHECKED"


class Chain:
    """An ordered list of processors: context processors, logits processors, then one selector.

    ``checked=True`` (or ``SAMPLEKIT_CHECKED=1``) verifies every processor's output at every step:
    shape, dtype and device kept, no NaN, input not written. Unchecked, shapes are verified on the
    first step only, so the check costs nothing measurable in the decoding loop.
    """

    def __init__(self, processors: Sequence[Processor], *, checked: bool | None = None,
                 source: str = "chain", candidates: bool = True):
        processors = list(processors)
        _check_composition(processors, source)
        self.processors = processors
        self.context = [p for p in processors if p.stage is Stage.CONTEXT]
        self.logits = [p for p in processors if p.stage is Stage.LOGITS]
        self.selector: Selector = processors[-1]  # type: ignore[assignment]
        self.checked = bool(os.environ.get(CHECKED_ENV)) if checked is None else checked
        self.source = source
        self.candidates = candidates  # False: always the dense path (see the module docstring)

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict | list, *, source: str = "<config>", registry=None,
                    checked: bool | None = None) -> "Chain":
        """Build from a config dict (``{"chain": [...], ...}``) or a bare chain list."""
        from samplekit.config import parse_config

        return parse_config(config, source=source, registry=registry).build_chain(checked=checked)

    @classmethod
    def from_yaml(cls, path: str | Path, *, registry=None, checked: bool | None = None) -> "Chain":
        from samplekit.config import load_config

        return load_config(path, registry=registry).build_chain(checked=checked)

    @classmethod
    def from_names(cls, *specs: str | tuple[str, dict], registry=None) -> "Chain":
        """``Chain.from_names(("temperature", {"value": 0.8}), ("top_k", {"k": 50}), "multinomial")``."""
        from samplekit.plugins import get_registry

        registry = registry or get_registry()
        made = []
        for spec in specs:
            name, values = (spec, {}) if isinstance(spec, str) else spec
            made.append(registry.create(name, values))
        return cls(made)

    def describe(self) -> list[dict[str, Any]]:
        """The fully resolved chain, every parameter filled in (``config show``)."""
        return [{p.name: dict(p.settings)} for p in self.processors]

    def __repr__(self) -> str:
        return "Chain(" + " -> ".join(repr(p) for p in self.processors) + ")"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.processors]

    # -- running ---------------------------------------------------------------------------------
    def start(self, batch_size: int, *, generator: torch.Generator | Sequence[torch.Generator] | None = None,
              seeds: Sequence[int] | None = None, **context: Any) -> "ChainRun":
        """Open one generation over ``batch_size`` rows.

        Randomness comes from ``generator`` (one for the batch, or one per row) or ``seeds`` (one
        per row). ``context`` fills the remaining StepContext fields (prompt_lengths,
        attention_mask, context_length, eos_token_ids, tokenizer).
        """
        random = RowRandom.from_seeds(seeds) if seeds is not None else RowRandom(generator, batch_size)
        ctx = StepContext(random=random, batch_size=batch_size, **context)
        return ChainRun(self, ctx)

    def apply(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Processed logits ``[B, V]`` (every logits processor, no selection), with fresh state."""
        return self.start(scores.shape[0]).process(input_ids, scores)

    def select(self, input_ids: torch.Tensor, scores: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Next tokens ``[B]``: process ``scores`` and select, drawing only from ``generator``."""
        return self.start(scores.shape[0], generator=generator).select(input_ids, scores)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Hugging Face's LogitsProcessor signature: processed scores."""
        return self.apply(input_ids, scores)


class ChainRun:
    """One generation through a chain: its step counter, random source and processor states."""

    def __init__(self, chain: Chain, ctx: StepContext):
        self.chain = chain
        self.ctx = ctx
        self.states = [p.start(ctx.batch_size, ctx) for p in chain.processors]
        self._logits = [(p, i) for i, p in enumerate(chain.processors) if p.stage is Stage.LOGITS]
        self._context = [(p, i) for i, p in enumerate(chain.processors) if p.stage is Stage.CONTEXT]
        self._selector_index = len(chain.processors) - 1
        self._accepting = [(p, i) for i, p in enumerate(chain.processors)
                           if type(p).accept is not Processor.accept]
        self._verified = False
        self._plan = None if chain.checked or not chain.candidates else _candidate_plan(
            self._logits, self._selector_index, chain.selector)
        # the plan's producer finds its own candidates (filter_candidates) rather than keeping a top-k
        self._finds_own = self._plan is not None and _trait(self._plan[1][0], "keeps_top") is None
        self._columns: dict[int, torch.Tensor] = {}  # k -> the columns 0, k-1, k of the top k+1
        self._native = _native_sampler(self._plan, chain.selector) if self._plan and not self._finds_own else None

    @property
    def step(self) -> int:
        return self.ctx.step

    def window(self) -> int | None:
        """The most positions the model may see (the smallest bound of the context processors)."""
        bounds = [w for p, _ in self._context if (w := p.window(self.ctx)) is not None]
        return min(bounds) if bounds else self.ctx.context_length

    def crop(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The ids to feed the model: every context processor applied in order."""
        ctx = self.ctx
        for p, i in self._context:
            ctx.state = self.states[i]
            input_ids = p.crop(input_ids, ctx)
        return input_ids

    def process(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Every logits processor in order; ``scores [B, V]`` in, new ``[B, V]`` out."""
        if self.chain.checked or not self._verified:
            return self._process_checked(input_ids, scores)
        return self._apply(self._logits, input_ids, scores)

    def _apply(self, processors, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``processors`` (pairs of processor and chain index) in order, each with its own state."""
        ctx = self.ctx
        for p, i in processors:
            ctx.state = self.states[i]
            scores = p.process(input_ids, scores, ctx)
        return scores

    def select(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Process, select the next token of each row ``[B]``, tell stateful processors, step on."""
        ctx = self.ctx
        try:
            tokens = None
            if self._plan is not None and self._verified:
                tokens = self._select_candidates(input_ids, scores)
            if tokens is None:
                scores = self.process(input_ids, scores)
                ctx.state = self.states[self._selector_index]
                tokens = self.chain.selector.select(input_ids, scores, ctx)
        except EmptyRowError as exc:
            order = " -> ".join(self.chain.names)
            raise GenerationError(
                f"step {ctx.step}: every logit of row(s) {exc.rows} is -inf after the chain "
                f"({order}); nothing can be selected. Loosen the filters (banned tokens, top_k, "
                "min_p, ...) so at least one token survives."
            ) from None
        for p, i in self._accepting:
            ctx.state = self.states[i]
            p.accept(tokens, ctx)
        ctx.step += 1
        return tokens

    def _select_candidates(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor | None:
        """The candidate fast path (module docstring); None when this step must run densely."""
        prefix, (producer, p_index), suffix = self._plan
        if self._finds_own:
            scores = self._apply(prefix, input_ids, scores)
            self.ctx.state = self.states[p_index]
            found = producer.filter_candidates(input_ids, scores, self.ctx)
            if found is None:  # finish densely from the producer on (the prefix has run)
                return self._select_dense(input_ids, scores, self._logits[len(prefix):])
            values, indices = found
            indices, order = indices.sort(dim=-1)
            return self._select_among(input_ids, values.gather(-1, order), indices, suffix, checked=False)
        k = producer.keeps_top(scores.shape[-1])
        if k is None or k + 1 > scores.shape[-1]:
            return None
        if self._native is not None and scores.device.type == "cpu" and scores.dtype == torch.float32 \
                and scores.stride(-1) == 1:
            return self._native_select(scores, k)
        values, indices = scores.topk(k + 1, dim=-1)  # (B, k+1), largest first
        values = self._apply(prefix, input_ids, values)
        # one read: each row's maximum (the prefix keeps the order), k-th and (k+1)-th values
        columns = self._columns.get(k)
        if columns is None:
            columns = self._columns[k] = torch.tensor([0, k - 1, k], device=values.device)
        picked = values.index_select(-1, columns).tolist()
        empty = [r for r, (top, _, _) in enumerate(picked) if top == _NEG_INF]
        if empty:
            raise EmptyRowError(empty)
        if any(kth == nxt and kth != _NEG_INF for _, kth, nxt in picked):
            return None  # a tie across the k-th place: the dense top-k keeps it
        indices, order = indices[:, :k].sort(dim=-1)  # token-id order, as the dense path
        return self._select_among(input_ids, values.gather(-1, order), indices, suffix, checked=True)

    def _native_select(self, scores: torch.Tensor, k: int) -> torch.Tensor | None:
        """The candidate path in the C kernel (samplekit.native): same tokens, one call per phase."""
        found = self._native.select(scores, k)
        if found >= 0:
            if found % 2:  # a row of only -inf: name every such row, as the tensor path does
                check_rows_not_empty(scores.amax(dim=-1))
            return None  # a tie at the k-th place: the dense top-k keeps it
        return self._native.draw(k, self.ctx.random.uniform(1))

    def _select_among(self, input_ids, values, indices, suffix, checked: bool) -> torch.Tensor:
        """The processors after the producer, then the selector, on candidates in token-id order.
        ``select_candidates`` is promised no row of only -inf: unless ``checked`` (the rows held a
        finite value) and no processor ran since, the rows are checked here."""
        ctx, states = self.ctx, self.states
        for p, i in suffix:
            ctx.state = states[i]
            special = getattr(p, "process_candidates", None)
            values = special(input_ids, values, indices, ctx) if special else p.process(input_ids, values, ctx)
        if suffix or not checked:
            check_rows_not_empty(values.amax(dim=-1))
        ctx.state = states[self._selector_index]
        return self.chain.selector.select_candidates(input_ids, values, indices, ctx)

    def _select_dense(self, input_ids, scores, processors) -> torch.Tensor:
        """``processors`` then the selector, on the whole vocabulary."""
        scores = self._apply(processors, input_ids, scores)
        self.ctx.state = self.states[self._selector_index]
        return self.chain.selector.select(input_ids, scores, self.ctx)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Continue with only the rows at indices ``rows`` (finished rows leave the batch)."""
        ctx = self.ctx
        self.states = [p.keep_rows(s, rows) for p, s in zip(self.chain.processors, self.states)]
        ctx.random.keep_rows(rows.tolist())
        ctx.batch_size = len(rows)
        for name in ("prompt_lengths", "attention_mask"):
            value = getattr(ctx, name)
            if value is not None:
                setattr(ctx, name, value.index_select(0, rows.to(value.device)))

    def _process_checked(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx
        full = self.chain.checked
        for p, i in self._logits:
            ctx.state = self.states[i]
            before = scores.clone() if full else None
            out = p.process(input_ids, scores, ctx)
            _verify_output(p, scores, out, before, ctx.step)
            scores = out
        self._verified = True
        return scores


_NEG_INF = float("-inf")


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def _trait(p: Processor, name: str, work: str = "process") -> Any:
    """``p``'s fast-path trait ``name``, trusted only when declared by the class that defines its
    ``work`` method: a subclass overriding ``process`` must declare the trait again."""
    cls = type(p)
    owner = _owner(cls, name)
    return getattr(cls, name) if owner is not None and owner is _owner(cls, work) else None


def _is_candidate_safe(p: Processor) -> bool:
    if _trait(p, "process_candidates") is not None:
        return True
    return bool(_trait(p, "candidate_safe"))


def _candidate_plan(logits: list[tuple[Processor, int]], selector_index: int, selector: Selector):
    """(prefix, producer, suffix) when the chain can run on candidates, else None. The producer
    is the first processor that can give them: a top-k whose prefix commutes with it (the
    prefix then runs on the candidates only), or a filter that finds its own candidates
    (``filter_candidates``; the prefix runs on the whole vocabulary first)."""
    if _trait(selector, "select_candidates", "select") is None:
        return None
    for at, (producer, _) in enumerate(logits):
        prefix, suffix = logits[:at], logits[at + 1:]
        if _trait(producer, "keeps_top") is not None:
            usable = all(_trait(p, "commutes_with_top_k") for p, _ in prefix)
        else:
            usable = _trait(producer, "filter_candidates") is not None
        if usable and all(_is_candidate_safe(p) for p, _ in suffix):
            return prefix, logits[at], suffix
    return None


def _native_sampler(plan, selector: Selector):
    """A ``native.TopKSampler`` when the plan is exactly temperature (T > 0, at most one)
    -> top_k -> multinomial and the C kernel is available (samplekit.native), else None."""
    from samplekit.processors.selectors import Multinomial
    from samplekit.processors.temperature import Temperature
    from samplekit.processors.top_k import TopK

    prefix, (producer, _), suffix = plan
    if type(producer) is not TopK or suffix or type(selector) is not Multinomial or len(prefix) > 1:
        return None
    temperature = 1.0
    if prefix:
        p = prefix[0][0]
        if type(p) is not Temperature or not ctypes.c_float(p.value).value > 0:  # > 0 in float32 too
            return None
        temperature = p.value
    from samplekit import native

    lib = native.library()
    return None if lib is None else native.TopKSampler(lib, temperature)


def _who(p: Processor) -> str:
    provider = getattr(p, "provider", None)
    return f"processor {p.name!r} ({provider.describe()})" if provider else f"processor {p.name!r}"


def _verify_output(p: Processor, given: torch.Tensor, out: Any, before: torch.Tensor | None, step: int) -> None:
    where = f"step {step}: {_who(p)}"
    if not isinstance(out, torch.Tensor):
        raise ProcessorContractError(f"{where} returned {type(out).__name__}, not a tensor")
    for attr in ("shape", "dtype", "device"):
        if getattr(out, attr) != getattr(given, attr):
            raise ProcessorContractError(
                f"{where} changed the scores' {attr} from {getattr(given, attr)} to {getattr(out, attr)}"
            )
    if before is None:
        return
    if torch.isnan(out).any() and not torch.isnan(before).any():
        raise ProcessorContractError(f"{where} introduced NaN into the scores")
    if not torch.equal(given.nan_to_num(), before.nan_to_num()):
        raise ProcessorContractError(f"{where} wrote its input scores in place; return a new tensor instead")


def _check_composition(processors: list[Processor], source: str) -> None:
    if not processors:
        raise ConfigError(f"{source}: the chain is empty; it needs at least a selector (greedy or multinomial)")
    for i, p in enumerate(processors):
        if not isinstance(p, Processor):
            raise ConfigError(f"{source}: chain[{i}] is {p!r}, not a samplekit Processor")
    selectors = [i for i, p in enumerate(processors) if isinstance(p, Selector)]
    if not selectors:
        raise ConfigError(
            f"{source}: the chain has no selector; end it with exactly one of greedy, multinomial "
            "(`samplekit processors` lists every selector)"
        )
    if len(selectors) > 1 or selectors[0] != len(processors) - 1:
        names = ", ".join(f"chain[{i}].{processors[i].name}" for i in selectors)
        raise ConfigError(f"{source}: a chain has exactly one selector and it is last; found {names}")
