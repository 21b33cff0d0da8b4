"""The decoding loop, once: prefill, step, stop checks and finished rows for every entry point.

``generate`` admits all its prompts into one ``Decoding`` and steps it until every row is done;
the ``Scheduler`` admits requests as rows free up. Everything about a step lives here:

- **Rows and groups.** A ``Row`` is one sequence (a request's sample); rows whose chains have the
  same ``signature()`` (and trace size) form a ``Group`` sharing one ``ChainRun``, each row with
  its own parameter values (``row_chains``). The model's forward pass serves every row.
- **History.** Token ids ``[B, capacity]``, right-aligned (padding in front, False in the mask),
  ``T`` columns filled; it grows a chunk at a time (``HISTORY_CHUNK``, or as much as it holds),
  never by a copy per step.
- **Cached path** (a model with a KV cache): prompts are prefilled (each distinct request once:
  its ``n`` samples share it) and joined to the running cache; each step feeds one position per
  row. A row's positions count from its first real token. Once a row's history outgrows its
  window (the smallest bound of its chain's context processors and the context length), learned
  absolute positions shift at every step, so no cache can be reused: the batch re-feeds from then
  on (correctness over speed; the scheduler runs such rows on their own instead).
- **Plain path** (any model, or a chain whose context processor crops its own way): every step
  re-feeds each row's window (its chain's crop); a model without ``attention_mask`` gets each
  group of equally padded rows unpadded.
- **Stops, per row**: end-of-text ids (``"eos"``, not kept), ``stop_token_ids`` (``"stop"``,
  kept), stop strings (``"stop"``, cut), a processor's ``ctx.finish``, ``max_new_tokens``
  (``"length"``), ``max_time`` (``"time"``). Finished rows leave: the history, the cache and
  their run drop them. Ids the tokenizer cannot decode are never sampled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from samplekit.chain import Chain, ChainRun
from samplekit.errors import ConfigError, SampleKitError
from samplekit.padding import left_padded, positions
from samplekit.processor import StepContext
from samplekit.protocol import model_device, support, undecodable_ids, vocab_size
from samplekit.requests import Request
from samplekit.stopping import Deadline, StopStrings, TextStream

HISTORY_CHUNK = 256  # the history grows by this many columns (or by as many as it holds) at a time
COMPACT_AT = 32  # drop leading padding that every row holds once it is this many positions


@dataclass
class TokenEvent:
    """One token of one row, as it is chosen.

    ``text`` is the printable text this token adds ("" while text is held back: an incomplete
    character, or a tail that might begin a stop string); the event that ends a row (``finished``
    set to its finish reason) also carries everything still held back, so joining a row's
    ``text`` gives its final text, and ``kept``: how many new tokens the row keeps (a stop string
    cuts the tokens it began in). ``step`` is the token's index among the row's new tokens; a row
    ending on end-of-text reports that id as ``token``. ``row``: the prompt's index (``generate``)
    or the sample's index in its request (the scheduler, also ``index``); ``request``: the
    scheduler's request.
    """

    row: int
    token: int
    step: int
    text: str
    finished: str | None = None
    trace: Any = None  # with trace: this step's samplekit.trace.StepTrace
    request: Request | None = None
    kept: int | None = None

    @property
    def index(self) -> int:
        """The sample's index in its request (the same as ``row``)."""
        return self.row


@dataclass(eq=False)
class Group:
    """The rows whose chains share one run (equal ``signature()``), in batch order."""

    chain: Chain
    trace: int | None = None
    run: ChainRun | None = None
    rows: list["Row"] = field(default_factory=list)
    index: torch.Tensor | None = None  # the rows' batch positions (None: the whole batch, in order)
    padded: bool = False  # whether some row holds padding in the history (its mask is not all True)


@dataclass(eq=False)
class Row:
    """One sequence decoding: a request's sample ``index``, its own chain, seed and stops."""

    request: Request
    index: int
    chain: Chain
    group: Group
    prompt: Any  # list of ids or a 1-d LongTensor
    seed: int | None
    stream: TextStream | None
    deadline: Deadline
    ends: frozenset[int]  # end-of-text ids that end it ("eos", not kept)
    stops: frozenset[int]  # stop_token_ids ("stop", kept)
    window: int | None  # the most positions it may see
    tokens: list[int] = field(default_factory=list)
    traces: list | None = None  # each step's StepTrace (generate's results)
    reason: str | None = None
    error: str | None = None
    joined: int = 0  # the batch step at which it chose its first token
    last_cached: float = math.inf  # the last batch step whose forward its window lets the cache serve

    @property
    def max_new_tokens(self) -> int:
        return self.request.max_new_tokens


def chain_window(chain: Chain, context_length: int | None) -> int | None:
    """The most positions ``chain`` lets the model see: its context processors' smallest bound,
    else ``context_length``."""
    ctx = StepContext(random=None, batch_size=0, context_length=context_length)  # what window() reads
    bounds = [w for p in chain.context if (w := p.window(ctx)) is not None]
    return min(bounds) if bounds else context_length


def crops_last_window(chain: Chain) -> bool:
    """Whether every context processor of ``chain`` keeps exactly the last window (a KV cache can
    then serve it)."""
    return all(p.keeps_last_window for p in chain.context)


class Decoding:
    """One batch of rows decoding through one model (module docstring).

    ``cached``: use the model's KV cache (None: when it has one; with ``joins``, one that rows can
    join). ``joins``: rows join while others decode (the scheduler). ``isolate_errors``: a chain
    that raises ends its own rows (finish reason "error") instead of raising. ``max_rows``: the
    most rows at once (a cache reserves them). ``before_chain(rows, logits) -> logits``: runs on
    each step's ``[len(rows), V]`` logits (rows in batch order) before the chains (transformers'
    own logits processors in ``samplekit.hf.custom_generate``)."""

    def __init__(self, model, *, tokenizer=None, eos_ids: Sequence[int] = (), context_length: int | None = None,
                 batch_invariant: bool = False, cached: bool | None = None, joins: bool = False,
                 max_rows: int | None = None, isolate_errors: bool = False,
                 before_chain: Callable[[list["Row"], torch.Tensor], torch.Tensor] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.before_chain = before_chain
        self.support = support(model)
        self.device = model_device(model)
        self.eos_ids = tuple(eos_ids)
        self.context_length = context_length
        if batch_invariant and not self.support.batch_invariant:
            raise ConfigError(f"batch_invariant=True, but {type(model).__name__} has no batch-invariant mode "
                              "(its forward takes no batch_invariant argument)")
        self.invariant = {"batch_invariant": True} if batch_invariant else {}
        self.last_only = {"last_only": True} if self.support.last_only else {}
        can = self.support.cache_joins if joins else self.support.cache
        if cached and not can:
            why = ("the model's cache cannot join rows (new_cache(batch, rows=) and cache.join)" if joins and
                   self.support.cache else "the model has no new_cache()")
            raise ConfigError(f"use_cache=True, but {why}")
        self.cached = can and cached is not False
        self.joins, self.max_rows, self.isolate_errors = joins, max_rows, isolate_errors
        self.vocab_limit = undecodable_ids(vocab_size(model), tokenizer, self.device)
        self.rows: list[Row] = []
        self.groups: list[Group] = []
        self.joining: list[Row] = []
        self.finished_early: list[Row] = []
        self.cache = None
        self.cache_start = 0  # the history column of the cache's first position
        self.ids = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # [B, capacity]
        self.mask = torch.ones(0, 0, dtype=torch.bool, device=self.device)  # False on padding; True past T
        self.T = 0
        self.steps = 0  # batch steps done
        self.busy_rows = 0  # sum over steps of active rows
        self._generator = None
        self._positions: torch.Tensor | None = None  # [B] the next fed position of each row (ragged cache)
        self._refresh()

    # -- rows in ------------------------------------------------------------------------------------
    def admit(self, rows: list[Row], *, generator: torch.Generator | None = None) -> None:
        """Rows that join at the next step (after the rows decoding). ``generator``: one generator
        shared by these rows (only when they start their group's run)."""
        for row in rows:
            if row.max_new_tokens <= 0:
                row.reason = "length"
                self.finished_early.append(row)
            else:
                self.joining.append(row)
        self._generator = generator

    @property
    def idle(self) -> bool:
        return not self.rows and not self.joining and not self.finished_early

    # -- one step ---------------------------------------------------------------------------------
    def step(self, events: bool = True) -> tuple[list[TokenEvent], list[Row]]:
        """Choose one token for every row (the joining rows prefilled first); the token events
        (``events``) and the rows that finished, which have left the batch."""
        done, self.finished_early = self.finished_early, []
        joining, self.joining = self.joining, []
        if not self.rows and not joining:
            return [], done
        logits = self._forward(joining)  # [B, V] the last position's, batch order
        if self.vocab_limit is not None:  # ids the tokenizer cannot decode: never sampled
            logits = logits.index_fill(-1, self.vocab_limit, float("-inf"))
        if self.before_chain is not None:
            logits = self.before_chain(self.rows, logits)
        failed: dict[int, str] = {}
        tokens = self._select(logits, failed)  # [B]
        self._append(tokens)
        self.steps += 1
        self.busy_rows += len(self.rows)
        out, ended = self._stops(tokens.tolist(), failed, events)
        if ended:
            done += [self.rows[i] for i in ended]
            self._drop(ended)
        elif self.joins:
            self._compact()
        return out, done

    # -- forward passes ---------------------------------------------------------------------------
    def _forward(self, joining: list[Row]) -> torch.Tensor:
        old = self._decode() if self.cached and self.rows else None
        if not self.cached:  # no cache, or a row's window passed: the batch re-feeds (module docstring)
            if joining:
                self._join_rows(joining)
                self._join_history([r.prompt for r in joining])
            return self._plain()
        new = self._prefill(joining) if joining else None
        return new if old is None else old if new is None else torch.cat([old, new])

    def _decode(self) -> torch.Tensor | None:
        """One cached step for the rows decoding: feed each row's last token."""
        if self.steps > self._cached_until:
            self.cached, self.cache = False, None
            return None
        T, start = self.T, self.cache_start
        ids = self.ids[:, T - 1:T]
        if not self._cache_padded:
            return _last(self.model(ids, cache=self.cache, **self.invariant))
        if self._positions is None:
            self._positions = self.mask[:, start:T - 1].sum(dim=1)
        fed, self._positions = self._positions, self._positions + 1
        return _last(self.model(ids, cache=self.cache, attention_mask=self.mask[:, start:T],
                                position_ids=fed[:, None], **self.invariant))

    def _prefill(self, joining: list[Row]) -> torch.Tensor:
        """Prefill the joining rows' prompts (each distinct request once) and join them to the
        cache and the history; their logits ``[len(joining), V]``."""
        firsts: dict[int, int] = {}
        order = [firsts.setdefault(id(r.request), len(firsts)) for r in joining]  # row -> its prompt
        prompts = list({id(r.request): r.prompt for r in joining}.values())
        ids, mask = left_padded(prompts, self.device)
        width = ids.shape[1]
        windows = {r.window for r in joining}
        window = windows.pop() if len(windows) == 1 else None
        start = width - window if window is not None and width > window and self.cache is None else 0
        fed = [min(len(p), width - start) for p in prompts]  # real tokens prefilled
        fresh = self.cache is None and order == list(range(len(prompts)))
        cache = self.model.new_cache(len(prompts), rows=self.max_rows) if fresh and self.joins else \
            self.model.new_cache(len(prompts))
        if min(fed) < width - start:  # ragged: padding masked out, positions from each first token
            feed_mask = mask[:, start:]
            out = self.model(ids[:, start:], cache=cache, attention_mask=feed_mask, position_ids=positions(feed_mask),
                             **self.last_only, **self.invariant)
        else:
            out = self.model(ids[:, start:], cache=cache, **self.last_only, **self.invariant)
        logits = _last(out)
        self._join_rows(joining)
        for r in joining:  # the cache serves a row while its window holds its cached tokens
            if r.window is not None:
                r.last_cached = self.steps + r.window - min(len(r.prompt), width - start)
        if fresh:
            self.cache, self.cache_start = cache, start
            self._set_history(ids, mask)
            self._refresh()
            return logits
        if self.cache is None:
            self.cache = self.model.new_cache(0, rows=self.max_rows)
        before, after = self.cache.join(cache, rows=order)
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        self._join_history(None, ids.index_select(0, index), mask.index_select(0, index), before, after)
        return logits.index_select(0, index)

    def _plain(self) -> torch.Tensor:
        """The plain loop: each row's window of its history re-fed (its chain's crop)."""
        T = self.T
        windowed = [g for g in self.groups if crops_last_window(g.chain)]
        own = [g for g in self.groups if g not in windowed]
        parts: list[tuple[torch.Tensor | None, torch.Tensor]] = []
        if windowed:
            rows = [r for g in windowed for r in g.rows] if own else self.rows
            index = None if not own else torch.tensor([self._position[id(r)] for r in rows], device=self.device)
            ids, mask = (self.ids, self.mask) if index is None else \
                (self.ids.index_select(0, index), self.mask.index_select(0, index))
            widths = [T if r.window is None else min(T, r.window) for r in rows]
            width = max(widths)
            ids, mask = ids[:, T - width:T], mask[:, T - width:T]
            if min(widths) < width:  # rows with smaller windows: the older columns hidden
                mask = mask.clone()
                for i, w in enumerate(widths):
                    if w < width:
                        mask[i, :width - w] = False
            elif not self._hist_padded:
                mask = None
            parts.append((index, self._forward_ids(ids, mask)))
        for g in own:
            index = g.index if g.index is not None else torch.arange(len(self.rows), device=self.device)
            ids = g.run.crop(self.ids.index_select(0, index)[:, :T])
            window = g.rows[0].window
            if window is not None and ids.shape[1] > window:
                ids = ids[:, -window:]
            mask = self.mask.index_select(0, index)[:, T - ids.shape[1]:T]  # crops keep the last columns
            parts.append((index, self._forward_ids(ids, mask)))
        if len(parts) == 1 and parts[0][0] is None:
            return parts[0][1]
        logits = parts[0][1].new_empty(len(self.rows), parts[0][1].shape[-1])
        for index, part in parts:
            logits.index_copy_(0, index, part)
        return logits

    def _forward_ids(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``[B, V]`` logits of the last position of ``ids`` (left padding hidden by ``mask``)."""
        if mask is None or bool(mask.all()):
            return _last(self.model(ids, **self.last_only, **self.invariant))
        if self.support.attention_mask:
            return _last(self.model(ids, attention_mask=mask, position_ids=positions(mask), **self.last_only,
                                    **self.invariant))
        pads = (~mask).sum(1).tolist()  # no attention_mask: each equally padded group unpadded
        logits = None
        for pad in sorted(set(pads)):
            group = torch.tensor([i for i, p in enumerate(pads) if p == pad], device=ids.device)
            part = _last(self.model(ids.index_select(0, group)[:, pad:], **self.last_only, **self.invariant))
            if logits is None:
                logits = part.new_empty(ids.shape[0], part.shape[-1])
            logits.index_copy_(0, group, part)
        return logits

    # -- selection --------------------------------------------------------------------------------
    def _select(self, logits: torch.Tensor, failed: dict[int, str]) -> torch.Tensor:
        """Each group's run selects for its own rows; ``[B]`` tokens in batch order."""
        if len(self.groups) == 1:
            mask = self.mask[:, :self.T] if self._hist_padded else None
            return self._select_group(self.groups[0], self.ids[:, :self.T], mask, logits, failed)
        ids, mask = self.ids[:, :self.T], self.mask[:, :self.T]
        parts = [self._select_group(group, ids.index_select(0, group.index),
                                    mask.index_select(0, group.index) if group.padded else None,
                                    logits.index_select(0, group.index), failed).to(self.device, torch.long)
                 for group in self.groups]
        return torch.cat(parts).index_select(0, self._order)  # each group's tokens back in batch order

    def _select_group(self, group: Group, ids, mask, logits, failed: dict[int, str]) -> torch.Tensor:
        """``mask``: the rows' history mask, None when none of them holds padding."""
        run = group.run
        run.ctx.attention_mask = mask
        try:
            tokens = run.select(ids, logits)
        except Exception as exc:
            if not self.isolate_errors:
                raise
            from samplekit.messages import one_line

            message = one_line(f"{type(exc).__name__}: {exc}" if not isinstance(exc, SampleKitError) else str(exc))
            failed.update({id(r): message for r in group.rows})
            run.ctx.finished = {}
            return torch.zeros(len(group.rows), dtype=torch.long, device=self.device)
        if group.trace and run.last_trace is not None:
            for row, traced in zip(group.rows, run.last_trace):
                if row.traces is not None:
                    row.traces.append(traced)
        return tokens

    # -- stops ------------------------------------------------------------------------------------
    def _stops(self, tokens: list[int], failed: dict[int, str], want: bool) -> tuple[list[TokenEvent], list[int]]:
        """Each row's stop checks; the events and the batch positions of the rows that ended."""
        step = self.steps
        ended = {id(g.rows[i]): reason for g in self.groups if g.run.ctx.finished
                 for i, reason in g.run.ctx.finished.items()}
        passed: dict[int, bool] = {}
        if not (self._streams or ended or failed or step >= self._next_length) and \
                self._stop_ids.isdisjoint(tokens) and not self._deadline_passed(passed):
            for row, token in zip(self.rows, tokens):  # the common step: no row ends
                row.tokens.append(token)
            if not want:
                return [], []
            traces = self._traces()
            return [TokenEvent(r.index, t, step - 1 - r.joined, "", None, traces.get(id(r)), r.request)
                    for r, t in zip(self.rows, tokens)], []
        events, done = [], []
        traces = self._traces() if want else {}
        for i, (row, token) in enumerate(zip(self.rows, tokens)):
            text, reason, stream = "", None, row.stream
            if id(row) in failed:
                reason, row.error = "error", failed[id(row)]
            elif token in row.ends:  # a processor's failure ("constraint_error") wins: no success to report
                reason = ended[id(row)] if ended.get(id(row), "").endswith("error") else "eos"
            else:
                row.tokens.append(token)
                if stream is not None:
                    text = stream.push(token)
                    if stream.stopped:
                        reason = "stop"
                        del row.tokens[stream.kept_tokens:]
                if reason is None and token in row.stops:
                    reason = "stop"
                reason = reason or ended.get(id(row))
                if reason is None and step - row.joined >= row.max_new_tokens:
                    reason = "length"
                if reason is None and row.deadline.at is not None and self._passed(row.deadline, passed):
                    reason = "time"
            if reason is not None:
                if stream is not None:
                    text += stream.flush()
                row.reason = reason
                done.append(i)
            if want:
                events.append(TokenEvent(row.index, token, step - 1 - row.joined, text, reason, traces.get(id(row)),
                                         row.request, None if reason is None else len(row.tokens)))
        return events, done

    def _traces(self) -> dict[int, Any]:
        return {id(r): t for g in self.groups if g.trace and g.run.last_trace is not None
                for r, t in zip(g.rows, g.run.last_trace)}

    def _deadline_passed(self, passed: dict[int, bool]) -> bool:
        return any(self._passed(d, passed) for d in self._deadlines)

    @staticmethod
    def _passed(deadline: Deadline, passed: dict[int, bool]) -> bool:
        """Each deadline's clock is read once per step."""
        key = id(deadline)
        if key not in passed:
            passed[key] = deadline.passed()
        return passed[key]

    # -- the history ------------------------------------------------------------------------------
    def _room(self) -> int:
        """Columns worth adding when the history is full: a chunk (or as many as it holds), at
        most what the rows can still fill."""
        left = max((r.max_new_tokens - (self.steps - r.joined) for r in self.rows), default=1)
        return max(1, min(max(HISTORY_CHUNK, self.T), left))

    def _set_history(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        """The history becomes ``ids``/``mask`` (the first rows), with room to grow."""
        self.T = ids.shape[1]
        self.ids, self.mask = ids, mask
        self._resize(0, self.T + self._room())

    def _resize(self, front: int, capacity: int) -> None:
        """New buffers of ``capacity`` columns: ``front`` padding columns, then the history."""
        B, T = self.ids.shape[0], self.T
        ids = self.ids.new_zeros(B, capacity)
        mask = self.mask.new_ones(B, capacity)
        mask[:, :front] = False
        ids[:, front:front + T] = self.ids[:, :T]
        mask[:, front:front + T] = self.mask[:, :T]
        self.ids, self.mask, self.T = ids, mask, T + front

    def _append(self, tokens: torch.Tensor) -> None:
        if self.T == self.ids.shape[1]:
            self._resize(0, self.T + self._room())
        self.ids[:, self.T] = tokens
        self.T += 1

    def _join_history(self, prompts, ids=None, mask=None, before: int = 0, after: int = 0) -> None:
        """Append rows holding ``prompts`` (or ``ids``/``mask`` with ``after`` padding columns in
        front) right-aligned with the rows here (``before`` padding columns in front of those)."""
        if ids is None:
            ids, mask = left_padded(prompts, self.device)
        width = after + ids.shape[1]
        front = max(before, width - self.T)
        if front:
            self._resize(front, self.T + front + self._room())
        n, capacity = ids.shape[0], self.ids.shape[1]
        new_ids = self.ids.new_zeros(n, capacity)
        new_mask = self.mask.new_ones(n, capacity)
        pad = self.T - ids.shape[1]
        new_mask[:, :pad] = False
        new_ids[:, pad:self.T], new_mask[:, pad:self.T] = ids, mask
        self.ids, self.mask = torch.cat([self.ids, new_ids]), torch.cat([self.mask, new_mask])
        self._refresh()

    def _join_rows(self, joining: list[Row]) -> None:
        """The rows join the batch and their groups' runs (after the rows already there)."""
        for row in joining:
            row.joined = self.steps
        self.rows += joining
        by_group: dict[int, list[Row]] = {}
        for row in joining:
            by_group.setdefault(id(row.group), []).append(row)
        for rows in by_group.values():
            group = rows[0].group
            lengths = torch.tensor([len(r.prompt) for r in rows], dtype=torch.long, device=self.device)
            seeds = None if all(r.seed is None for r in rows) else [r.seed for r in rows]
            chains = [r.chain for r in rows]
            row_chains = None if all(c is group.chain for c in chains) else chains
            if group.run is None:
                group.run = group.chain.start(len(rows), seeds=seeds, generator=self._generator, trace=group.trace,
                                              prompt_lengths=lengths, context_length=self.context_length,
                                              eos_token_ids=self.eos_ids, tokenizer=self.tokenizer,
                                              row_chains=row_chains)
                self.groups.append(group)
            else:
                group.run.add_rows(len(rows), seeds=seeds, prompt_lengths=lengths, row_chains=row_chains)
            group.rows += rows  # joining rows come last in the batch and in their group: orders agree
        self._refresh()

    # -- rows out ---------------------------------------------------------------------------------
    def _drop(self, gone: list[int]) -> None:
        """Rows at batch positions ``gone`` leave the history, the cache and their runs. With
        ``joins``, the last rows fill the gaps (only as many cache rows move as rows left)."""
        gone_set = set(gone)
        keep = fill_from_the_end(len(self.rows), gone_set) if self.joins else \
            [i for i in range(len(self.rows)) if i not in gone_set]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            for group in self.groups:
                group.rows, group.run = [], None
            self.groups = []
            self.ids, self.mask, self.T = self.ids[:0, :0], self.mask[:0, :0], 0
            self.cache_start = 0
            if self.cache is not None and self.joins:  # kept for the rows that join next
                self.cache.select_rows(torch.zeros(0, dtype=torch.long, device=self.device))
                self.cache.length = 0
            else:
                self.cache = None
            self._refresh()
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.ids, self.mask = self.ids.index_select(0, index), self.mask.index_select(0, index)
        if self.cache is not None:
            self.cache.select_rows(index)
        position = {id(r): i for i, r in enumerate(self.rows)}
        for group in self.groups:
            order = sorted((position[id(r)], j) for j, r in enumerate(group.rows) if id(r) in position)
            if [j for _, j in order] == list(range(len(group.rows))):
                continue  # none of its rows left or moved
            group.rows = [group.rows[j] for _, j in order]  # a group's rows stay in batch order
            if group.rows:
                group.run.keep_rows(torch.tensor([j for _, j in order], dtype=torch.long))
            else:
                group.run = None
        self.groups = [g for g in self.groups if g.rows]
        self._refresh()
        if self.joins:
            self._compact()

    def drop_rows(self, rows: list[Row]) -> None:
        """Rows leave now (a cancelled request's), whatever they were doing."""
        gone_ids = {id(r) for r in rows}
        self.joining = [r for r in self.joining if id(r) not in gone_ids]
        gone = [i for i, r in enumerate(self.rows) if id(r) in gone_ids]
        if gone:
            self._drop(gone)

    def _compact(self) -> None:
        """Drop leading positions that every row holds as padding (rows that left made them)."""
        if not self.rows or self.cache_start:
            return
        lead = self._lead
        tight = self.cache is not None and self.context_length is not None and \
            self.cache.length + 1 >= self.context_length
        if lead and (lead >= COMPACT_AT or tight):
            self.ids, self.mask, self.T = self.ids[:, lead:], self.mask[:, lead:], self.T - lead
            if self.cache is not None:
                self.cache.compact(lead)
            self._refresh()

    # -- what changes only when rows join or leave -----------------------------------------------------
    def _refresh(self) -> None:
        rows, T = self.rows, self.T
        lengths = [len(r.prompt) + self.steps - r.joined for r in rows]  # real columns of each row
        self._lead = T - max(lengths, default=T)
        self._hist_padded = any(n < T for n in lengths)
        self._cache_padded = any(T - n > self.cache_start for n in lengths)
        self._positions = None
        self._position = {id(r): i for i, r in enumerate(rows)}
        self._next_length = min((r.joined + r.max_new_tokens for r in rows), default=math.inf)
        self._cached_until = min((r.last_cached for r in rows), default=math.inf)
        self._stop_ids = frozenset().union(*(r.ends | r.stops for r in rows))
        self._streams = any(r.stream is not None for r in rows)
        self._deadlines = list({id(r.deadline): r.deadline for r in rows if r.deadline.at is not None}.values())
        short = {id(r) for r, n in zip(rows, lengths) if n < T}  # rows holding padding (stays so as steps go)
        for group in self.groups:
            where = [self._position[id(r)] for r in group.rows]
            group.padded = any(id(r) in short for r in group.rows)
            group.index = None if len(self.groups) == 1 else torch.tensor(where, dtype=torch.long,
                                                                            device=self.device)
        if len(self.groups) > 1:  # the batch position of each group's token, groups concatenated
            where = [self._position[id(r)] for g in self.groups for r in g.rows]
            order = [0] * len(where)
            for at, i in enumerate(where):
                order[i] = at
            self._order = torch.tensor(order, dtype=torch.long, device=self.device)


def new_row(request: Request, index: int, chain: Chain, group: Group, *, seed: int | None, tokenizer,
            eos_ids: Sequence[int], context_length: int | None, deadline: Deadline | None = None,
            prompt=None, traces: bool = False) -> Row:
    """A row for sample ``index`` of ``request`` (its stops, text stream and window)."""
    stream = TextStream(tokenizer, StopStrings(request.stop)) if tokenizer is not None else None
    ends = frozenset(eos_ids) if request.stop_on_eos else frozenset()
    return Row(request, index, chain, group, request.prompt if prompt is None else prompt, seed, stream,
               deadline or Deadline(request.max_time), ends, frozenset(request.stop_token_ids),
               chain_window(chain, context_length), traces=[] if traces else None)


def fill_from_the_end(count: int, gone: set[int]) -> list[int]:
    """The rows kept, in their new order: each gap left by a row in ``gone`` takes the last kept
    row, so only rows from the end move (``[0, 1, 2, 3, 4]`` without 1 is ``[0, 4, 2, 3]``)."""
    order = list(range(count))
    tail = [i for i in range(count - 1, -1, -1) if i not in gone]  # kept rows, last first
    kept = count - len(gone)
    for hole in sorted(i for i in gone if i < kept):
        order[hole] = tail.pop(0)
    return order[:kept]


def _last(out) -> torch.Tensor:
    logits = out if isinstance(out, torch.Tensor) else out.logits  # Hugging Face-style outputs too
    return logits[:, -1, :]
