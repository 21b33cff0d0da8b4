"""Continuous batching: keep up to ``max_batch`` rows decoding, a new request taking a finished
row's place at the next step.

    scheduler = Scheduler(model, tokenizer=enc, max_batch=32)
    for result in scheduler.run(requests):          # an iterable of samplekit.requests.Request
        print(result.id, [s.text for s in result.samples])

Each step decodes one token for every active row. Rows that finish leave (the KV cache, the
token history and their chain's state drop them); waiting requests are then prefilled together
and join: their keys and values go into the running cache (``KVCache.join``), right-aligned with
the other rows, and their processors' state joins each chain's run (``ChainRun.add_rows``). The
``n`` samples of a request share one prefill.

Requests may use different chains: the model's forward pass serves every row, and each distinct
chain (equal configs are one chain) runs once per step over its own rows. With per-request
seeds a request's output does not depend on what else is in the batch, the batch size or the
order requests arrive in: the forward is batch-invariant (``batch_invariant``, on by default when
the model has the mode), each row draws from its own seeded generators, and processors keep
per-row state (the contract the conformance kit checks).

Models without the KV-cache protocol, or whose cache cannot ``join``, run the plain loop: every
step re-feeds each row's history (the last ``context_length`` tokens), which needs no cache. A
request whose prompt and ``max_new_tokens`` pass the context window runs on its own through
``samplekit.generate`` (re-feeding the window once its history outgrows it), said once.
"""

from __future__ import annotations

import collections
import itertools
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from samplekit.chain import Chain, ChainRun
from samplekit.errors import ConfigError, SampleKitError
from samplekit.engine import (_accepts, _model_device, _prepare, _undecodable_ids, _vocab_size, generate,
                              model_context_length, resolve_chain)
from samplekit.padding import left_padded, positions
from samplekit.processor import run_seeds
from samplekit.requests import Request, RequestResult, Sample, sample_seed
from samplekit.stopping import Deadline, StopStrings, TextStream, resolve_eos_ids

COMPACT_AT = 32  # drop leading padding that every row holds once it is this many positions


class SchedulerWarning(UserWarning):
    """Something about the requests the scheduler serves in a slower way, said once."""


@dataclass
class TokenEvent:
    """One token of one sample, as it is chosen: ``text`` is the printable text it adds (held
    back while it might begin a stop string); the sample's last event has ``finished`` set and
    ``kept``, how many new tokens the sample keeps (a stop string cuts the tokens it began in)."""

    request: Request
    index: int
    token: int
    text: str
    finished: str | None = None
    trace: Any = None  # the step's samplekit.trace.StepTrace, when the request asked for one
    kept: int | None = None


@dataclass(eq=False)
class _Row:
    """One sample decoding in the batch."""

    request: Request
    index: int
    seed: int
    group: "_Group"
    length: int  # real tokens so far: prompt + new
    stream: TextStream | None
    deadline: Deadline
    tokens: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _Group:
    """The rows that share one chain, and that chain's run over them (in batch order)."""

    chain: Chain
    trace: int | None = None
    run: ChainRun | None = None
    rows: list[_Row] = field(default_factory=list)


class Scheduler:
    """Continuous batching over ``model`` (module docstring).

    ``tokenizer``: for text, stop strings and end-of-text ids. ``chain``: the default for requests
    that name none (None: temperature 0.8, top-k 50, multinomial). ``batch_invariant``: None uses
    the model's batch-invariant mode when it has one (needed for a request's output to be the
    same in any batch). ``use_cache``: None uses the KV cache when the model's cache can join
    rows. ``context_length``: default the model's.
    """

    def __init__(self, model, *, tokenizer=None, max_batch: int = 32, chain: Any = None,
                 batch_invariant: bool | None = None, use_cache: bool | None = None,
                 context_length: int | None = None, eos_token_ids=None):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        self.device = _model_device(model)
        self.context_length = context_length if context_length is not None else model_context_length(model)
        self.eos_ids = resolve_eos_ids(eos_token_ids, tokenizer)
        self.default_chain = chain
        invariant = _accepts(model, "batch_invariant") if batch_invariant is None else batch_invariant
        if invariant and not _accepts(model, "batch_invariant"):
            raise ConfigError(f"batch_invariant=True, but {type(model).__name__} has no batch-invariant mode")
        self.invariant = {"batch_invariant": True} if invariant else {}
        self.takes_mask = _accepts(model, "attention_mask") and _accepts(model, "position_ids")
        self.last_only = {"last_only": True} if _accepts(model, "last_only") else {}
        self.cached = use_cache is not False and _cache_joins(model)
        if use_cache and not self.cached:
            raise ConfigError("use_cache=True, but the model's cache cannot join rows (new_cache(batch, rows=) and "
                             "cache.join)")
        self.vocab_limit = _undecodable_ids(_vocab_size(model), tokenizer, self.device)
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[Request, int, int]] = collections.deque()
        self._cancelled: set[int] = set()
        self._chains: dict[str, Chain] = {}
        self._groups: dict[tuple, _Group] = {}  # (id(chain), trace) -> group
        self._pending: dict[int, list[Sample | None]] = {}  # id(request) -> its samples so far
        self._said: set[str] = set()
        self.rows: list[_Row] = []
        self.cache = None
        self.hist = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # [B, T] right-aligned
        self.mask = torch.zeros(0, 0, dtype=torch.bool, device=self.device)  # [B, T] False on padding
        self._failed: dict[int, str] = {}  # id(row) -> why its chain failed at this step
        self.steps = 0
        self.busy_rows = 0  # sum over steps of active rows (slot utilisation = busy / steps / max_batch)

    # -- submitting ---------------------------------------------------------------------------------
    def submit(self, request: Request) -> Request:
        """Queue ``request`` (thread-safe); an unseeded request gets its seed now."""
        self._check(request)
        if request.seed is None:
            request.seed = run_seeds(1)[0]
        self._chain(request)  # resolve (and validate) its chain now, not mid-batch
        with self._lock:
            self._pending[id(request)] = [None] * request.n
            self._waiting.extend((request, i, sample_seed(request.seed, i)) for i in range(request.n))
        return request

    def cancel(self, request: Request) -> None:
        """Stop ``request``'s samples at the next step (a client that went away); no result comes."""
        with self._lock:
            self._cancelled.add(id(request))

    @property
    def batch_invariant(self) -> bool:
        """Whether the forward runs in the model's batch-invariant mode (a request's output then
        does not depend on the batch it runs in)."""
        return bool(self.invariant)

    @property
    def waiting(self) -> int:
        """Samples waiting for a row."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self.rows and not self._waiting

    def run(self, requests: Iterable[Request]) -> Iterator[RequestResult]:
        """Serve ``requests`` (drawn as slots free up, so an iterable of millions is fine) and
        yield each result as its request finishes."""
        source = iter(requests)
        exhausted = False
        while True:
            while not exhausted and len(self._waiting) < 2 * self.max_batch:
                request = next(source, None)
                if request is None:
                    exhausted = True
                else:
                    self.submit(request)
            if self.idle:
                if exhausted:
                    return
                continue
            _, finished = self.step()
            yield from finished

    # -- one step ---------------------------------------------------------------------------------
    def step(self) -> tuple[list[TokenEvent], list[RequestResult]]:
        """Decode one token for every active row (admitting waiting samples into free rows first);
        return the token events and the requests that finished."""
        with torch.inference_mode():
            self._drop_cancelled()
            done_alone = self._run_overflow()
            joining = self._admit()
            if not self.rows and not joining:
                return [], done_alone
            logits = self._forward(joining)  # [B, V]
            if self.vocab_limit is not None:
                logits = logits.index_fill(-1, self.vocab_limit, float("-inf"))
            tokens = self._select(logits)
            self.hist = torch.cat([self.hist, tokens[:, None]], dim=1)
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
            self.steps += 1
            self.busy_rows += len(self.rows)
            events, finished = self._stops(tokens.tolist())
            self._compact()
        return events, done_alone + finished

    # -- admission ------------------------------------------------------------------------------------
    def _admit(self) -> list[_Row]:
        """Take waiting samples into free rows; their prompts join the history (right-aligned)."""
        with self._lock:
            free = self.max_batch - len(self.rows)
            taken = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
        if not taken:
            return []
        joining = []
        for request, index, seed in taken:
            group = self._group(request)
            stream = TextStream(self.tokenizer, StopStrings(request.stop)) if self.tokenizer is not None else None
            row = _Row(request, index, seed, group, len(request.prompt), stream, Deadline(request.max_time))
            joining.append(row)
        if self.cached:
            return joining  # the prefill joins them to the cache and the history (_forward)
        self._join_history([r.request.prompt for r in joining])
        self._join_rows(joining)
        return joining

    def _join_history(self, prompts: list[list[int]]) -> None:
        """Append rows holding ``prompts`` to the history, right-aligned with the rows there."""
        width = max(self.hist.shape[1], max(map(len, prompts)))
        if width > self.hist.shape[1]:
            extra = width - self.hist.shape[1]
            self.hist = torch.cat([self.hist.new_zeros(len(self.rows), extra), self.hist], dim=1)
            self.mask = torch.cat([self.mask.new_zeros(len(self.rows), extra), self.mask], dim=1)
        ids, mask = left_padded(prompts, self.device, width)
        self.hist = torch.cat([self.hist, ids])
        self.mask = torch.cat([self.mask, mask])

    def _join_rows(self, joining: list[_Row]) -> None:
        """The rows join the batch and their chains' runs (after the rows already there)."""
        self.rows += joining
        for group, rows in itertools.groupby(sorted(joining, key=lambda r: id(r.group)), key=lambda r: r.group):
            rows = list(rows)
            lengths = torch.tensor([r.length for r in rows], dtype=torch.long, device=self.device)
            seeds = [r.seed for r in rows]
            if group.run is None:
                group.run = group.chain.start(len(rows), seeds=seeds, prompt_lengths=lengths, trace=group.trace,
                                              context_length=self.context_length, eos_token_ids=self.eos_ids,
                                              tokenizer=self.tokenizer)
            else:
                group.run.add_rows(len(rows), seeds=seeds, prompt_lengths=lengths)
            group.rows += rows  # joining rows come last in the batch and in their group: orders agree

    # -- forward passes -----------------------------------------------------------------------------
    def _forward(self, joining: list[_Row]) -> torch.Tensor:
        """The next-token logits ``[B, V]`` of every row, the joining rows last."""
        if not self.cached:
            return self._plain()
        old = self._decode() if len(self.rows) else None
        new = self._prefill(joining) if joining else None
        return new if old is None else old if new is None else torch.cat([old, new])

    def _decode(self) -> torch.Tensor:
        """One cached step for the rows already decoding: feed each row's last token."""
        lengths = torch.tensor([r.length for r in self.rows], device=self.device)
        ragged = not bool(self.mask.all())
        out = self.model(self.hist[:, -1:], cache=self.cache, attention_mask=self.mask if ragged else None,
                         position_ids=(lengths - 1)[:, None], **self.invariant)
        return _last(out)

    def _prefill(self, joining: list[_Row]) -> torch.Tensor:
        """Prefill the joining rows' prompts (each distinct request once) and join their keys and
        values to the running cache; their prompts join the history."""
        firsts: dict[int, int] = {}
        order = [firsts.setdefault(id(r.request), len(firsts)) for r in joining]  # row -> its prompt
        prompts = list({id(r.request): r.request.prompt for r in joining}.values())
        ids, mask = left_padded(prompts, self.device)
        ragged = not bool(mask.all())
        cache = self.model.new_cache(len(prompts))
        logits = _last(self.model(ids, cache=cache, attention_mask=mask if ragged else None,
                                  position_ids=positions(mask), **self.last_only, **self.invariant))
        if self.cache is None:
            self.cache = self.model.new_cache(0, rows=self.max_batch)
        before, after = self.cache.join(cache, rows=order)
        if before:  # the rows here moved right: padding in front of their history too
            self.hist = torch.cat([self.hist.new_zeros(len(self.rows), before), self.hist], dim=1)
            self.mask = torch.cat([self.mask.new_zeros(len(self.rows), before), self.mask], dim=1)
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        pad = torch.zeros(len(order), after, dtype=torch.long, device=self.device)
        self.hist = torch.cat([self.hist, torch.cat([pad, ids.index_select(0, index)], dim=1)])
        self.mask = torch.cat([self.mask, torch.cat([pad.bool(), mask.index_select(0, index)], dim=1)])
        self._join_rows(joining)
        return logits.index_select(0, index)

    def _plain(self) -> torch.Tensor:
        """The plain loop: every row's history (its last ``context_length`` tokens) re-fed."""
        ids, mask = self.hist, self.mask
        if self.context_length is not None and ids.shape[1] > self.context_length:
            ids, mask = ids[:, -self.context_length:], mask[:, -self.context_length:]
        if bool(mask.all()):
            return _last(self.model(ids, **self.last_only, **self.invariant))
        if not self.takes_mask:
            raise ConfigError(f"{type(self.model).__name__} takes no attention_mask, so rows of different lengths "
                             "cannot share a batch; use max_batch=1")
        return _last(self.model(ids, attention_mask=mask, position_ids=positions(mask), **self.last_only,
                                **self.invariant))

    # -- selection ----------------------------------------------------------------------------------
    def _select(self, logits: torch.Tensor) -> torch.Tensor:
        """Each chain's run selects for its own rows; ``[B]`` tokens in batch order. A chain that
        raises fails its own rows only (finish reason "error"); the others go on."""
        self._failed: dict[int, str] = {}
        groups = [g for g in self._groups.values() if g.rows]
        if len(groups) == 1:
            return self._select_group(groups[0], self.hist, self.mask, logits)
        tokens = torch.zeros(len(self.rows), dtype=torch.long, device=self.device)
        position = {id(r): i for i, r in enumerate(self.rows)}
        for group in groups:
            index = torch.tensor([position[id(r)] for r in group.rows], dtype=torch.long, device=self.device)
            tokens[index] = self._select_group(group, self.hist.index_select(0, index),
                                               self.mask.index_select(0, index), logits.index_select(0, index))
        return tokens

    def _select_group(self, group: _Group, ids: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        group.run.ctx.attention_mask = None if bool(mask.all()) else mask
        try:
            return group.run.select(ids, logits)
        except Exception as exc:  # noqa: BLE001 - reported on each of the group's samples
            from samplekit.messages import one_line

            message = one_line(f"{type(exc).__name__}: {exc}" if not isinstance(exc, SampleKitError) else str(exc))
            self._failed.update({id(r): message for r in group.rows})
            group.run.ctx.finished = {}
            return torch.zeros(len(group.rows), dtype=torch.long, device=self.device)

    # -- stops, finished rows ------------------------------------------------------------------------
    def _stops(self, tokens: list[int]) -> tuple[list[TokenEvent], list[RequestResult]]:
        events, done = [], []
        ended = {id(r): g.run.ctx.finished[i] for g in self._groups.values() if g.rows and g.run.ctx.finished
                 for i, r in enumerate(g.rows) if i in g.run.ctx.finished}
        traces = {id(r): t for g in self._groups.values() if g.rows and g.trace and g.run.last_trace
                  for r, t in zip(g.rows, g.run.last_trace)}
        for i, (row, token) in enumerate(zip(self.rows, tokens)):
            request, text, reason = row.request, "", None
            row.length += 1
            if id(row) in self._failed:
                reason = "error"
            elif token in self.eos_ids and request.stop_on_eos:
                reason = "eos"
            else:
                row.tokens.append(token)
                if row.stream is not None:
                    text = row.stream.push(token)
                    if row.stream.stopped:
                        reason = "stop"
                        del row.tokens[row.stream.kept_tokens:]
                reason = reason or ended.get(id(row))
                if reason is None and len(row.tokens) >= request.max_new_tokens:
                    reason = "length"
                if reason is None and row.deadline.passed():
                    reason = "time"
            if reason is not None:
                if row.stream is not None:
                    text += row.stream.flush()
                done.append(i)
            events.append(TokenEvent(request, row.index, token, text, reason, traces.get(id(row)),
                                     None if reason is None else len(row.tokens)))
        results = [r for i in done if (r := self._finish(self.rows[i], events[i].finished)) is not None]
        if done:
            self._drop(done)
        return events, results

    def _finish(self, row: _Row, reason: str) -> RequestResult | None:
        """Record the row's sample; the request's result once all its samples are in."""
        text = row.stream.text if row.stream is not None else None
        samples = self._pending.get(id(row.request))
        if samples is None:  # cancelled meanwhile
            return None
        samples[row.index] = Sample(row.index, row.tokens, text, reason, row.seed, self._failed.get(id(row)))
        if any(s is None for s in samples):
            return None
        del self._pending[id(row.request)]
        return RequestResult(row.request, samples)

    def _drop(self, gone: list[int]) -> None:
        """Rows at batch positions ``gone`` leave: the history, the cache and their chains' runs.
        The last rows fill the gaps, so only as many cache rows move as rows left."""
        keep = _fill_from_the_end(len(self.rows), set(gone))
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.hist, self.mask = self.hist.index_select(0, index), self.mask.index_select(0, index)
        if self.cache is not None:
            self.cache.select_rows(index)
        self.rows = [self.rows[i] for i in keep]
        position = {id(r): i for i, r in enumerate(self.rows)}
        for group in self._groups.values():
            order = sorted((position[id(r)], j) for j, r in enumerate(group.rows) if id(r) in position)
            if [j for _, j in order] == list(range(len(group.rows))):
                continue  # none of its rows left or moved
            group.rows = [group.rows[j] for _, j in order]  # a group's rows stay in batch order
            if group.rows:
                group.run.keep_rows(torch.tensor([j for _, j in order], dtype=torch.long))
            else:
                group.run = None
        self._groups = {k: g for k, g in self._groups.items() if g.rows}  # a server sees endless chains
        if not self.rows:
            self.hist, self.mask = self.hist[:, :0], self.mask[:, :0]
            if self.cache is not None:
                self.cache.length = 0

    def _compact(self) -> None:
        """Drop leading positions that every row holds as padding (rows that left made them)."""
        if not self.rows:
            return
        first_real = int((~self.mask).sum(dim=1).min())  # right-aligned: padding comes first
        tight = self.cache is not None and self.context_length is not None and \
            self.cache.length + 1 >= self.context_length
        if first_real and (first_real >= COMPACT_AT or tight):
            self.hist, self.mask = self.hist[:, first_real:], self.mask[:, first_real:]
            if self.cache is not None:
                self.cache.compact(first_real)

    def _drop_cancelled(self) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            if not cancelled:
                return
            self._waiting = collections.deque(w for w in self._waiting if id(w[0]) not in cancelled)
        for key in cancelled:
            self._pending.pop(key, None)
        gone = [i for i, r in enumerate(self.rows) if id(r.request) in cancelled]
        if gone:
            self._drop(gone)

    # -- requests the batch cannot hold ---------------------------------------------------------------
    def _run_overflow(self) -> list[RequestResult]:
        """Requests that pass the context window run on their own (cached path only)."""
        if not self.cached or self.context_length is None:
            return []
        with self._lock:
            long = [w for w in self._waiting
                    if len(w[0].prompt) + w[0].max_new_tokens > self.context_length]
            if not long:
                return []
            self._waiting = collections.deque(w for w in self._waiting if w not in long)
        self._say_once("long", f"{len(long)} sample(s) need more positions than the model's context window "
                               f"({self.context_length}): they run outside the batch, re-feeding the window each step")
        results = []
        for request, index, seed in long:
            (out,) = generate(self.model, [request.prompt], chain=self._chain(request), seed=[seed],
                              max_new_tokens=request.max_new_tokens, stop=request.stop,
                              stop_on_eos=request.stop_on_eos, eos_token_ids=self.eos_ids, tokenizer=self.tokenizer,
                              max_time=request.max_time, context_length=self.context_length,
                              batch_invariant=bool(self.invariant))
            samples = self._pending.get(id(request))
            if samples is None:
                continue
            samples[index] = Sample(index, out.tokens, out.text, out.finish_reason, seed)
            if all(s is not None for s in samples):
                del self._pending[id(request)]
                results.append(RequestResult(request, samples))
        return results

    # -- helpers -------------------------------------------------------------------------------------
    def _chain(self, request: Request) -> Chain:
        spec = request.chain if request.chain is not None else self.default_chain
        if isinstance(spec, Chain):
            return spec
        key = repr(spec) if not isinstance(spec, (dict, list)) else _config_key(spec)
        chain = self._chains.get(key)
        if chain is None:
            chain = self._chains[key] = resolve_chain(spec)
        return chain

    def _group(self, request: Request) -> _Group:
        chain = self._chain(request)
        key = (id(chain), request.trace or 0)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(chain, request.trace or None)
        return group

    def _check(self, request: Request) -> None:
        if not isinstance(request, Request):
            raise TypeError(f"submit takes a samplekit.requests.Request, not {type(request).__name__}")
        if not request.prompt:
            raise ValueError(f"request {request.id!r}: the prompt is empty")
        if not isinstance(request.n, int) or request.n < 1:
            raise ValueError(f"request {request.id!r}: n must be an int >= 1, got {request.n!r}")
        if request.stop and self.tokenizer is None:
            raise ValueError(f"request {request.id!r}: stop strings are matched on decoded text: give the "
                             "scheduler a tokenizer")
        if not getattr(self, "_prepared", False):
            _prepare(self.model)
            self._prepared = True

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            warnings.warn(message, SchedulerWarning, stacklevel=3)

    @property
    def utilisation(self) -> float:
        """The share of row slots that held a decoding row, over the steps so far."""
        return self.busy_rows / (self.steps * self.max_batch) if self.steps else 0.0


def _fill_from_the_end(count: int, gone: set[int]) -> list[int]:
    """The rows kept, in their new order: each gap left by a row in ``gone`` takes the last kept
    row, so only rows from the end move (``[0, 1, 2, 3, 4]`` without 1 is ``[0, 4, 2, 3]``)."""
    order = list(range(count))
    tail = [i for i in range(count - 1, -1, -1) if i not in gone]  # kept rows, last first
    kept = count - len(gone)
    for hole in sorted(i for i in gone if i < kept):
        order[hole] = tail.pop(0)
    return order[:kept]


def _last(out) -> torch.Tensor:
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return logits[:, -1, :]


def _config_key(spec: dict | list) -> str:
    import json

    return json.dumps(spec, sort_keys=True, default=repr)


def _cache_joins(model) -> bool:
    """The model has the KV-cache protocol with caches that can reserve rows and join them."""
    new_cache = getattr(model, "new_cache", None)
    if not callable(new_cache) or not _accepts(new_cache, "rows"):
        return False
    return callable(getattr(new_cache(0, rows=1), "join", None))
