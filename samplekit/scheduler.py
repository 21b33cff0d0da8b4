"""Continuous batching: keep up to ``max_batch`` rows decoding, a new request taking a finished
row's place at the next step.

    scheduler = Scheduler(model, tokenizer=enc, max_batch=32)
    for result in scheduler.run(requests):          # an iterable of samplekit.requests.Request
        print(result.id, [s.text for s in result.samples])

The scheduler queues requests and hands them to the decoding loop every entry point shares
(``samplekit.decoding.Decoding``) as rows free up: each step decodes one token for every active
row; rows that finish leave; waiting requests are prefilled together and join the running cache
(``cache.join``) and their group's chain run (``ChainRun.add_rows``). The ``n`` samples of a
request share one prefill.

Requests may use different chains: the model's forward pass serves every row, and requests whose
chains have the same ``signature()`` (the same processors in the same order; values may differ
per row) share one chain run, each row with its own values. With per-request seeds a request's
output does not depend on what else is in the batch, the batch size or the order requests arrive
in: the forward is batch-invariant (``batch_invariant``, on by default when the model has the
mode), each row draws from its own seeded generators, and processors keep per-row state.

Models without a cache that rows can join run the plain loop (each row's window re-fed every
step). On the cached path, a request whose prompt and ``max_new_tokens`` pass its window (the
model's context length, or a context processor's smaller one), or whose chain crops the context
its own way, runs on its own through the same loop (re-feeding its window), said once.
"""

from __future__ import annotations

import collections
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from samplekit.chain import Chain
from samplekit.chain_cache import ChainCache
from samplekit.decoding import Decoding, Group, Row, TokenEvent, chain_window, crops_last_window, new_row
from samplekit.engine import resolve_chain
from samplekit.processor import run_seeds
from samplekit.protocol import model_context_length, prepare, support
from samplekit.requests import Request, RequestResult, Sample, sample_seed
from samplekit.stopping import resolve_eos_ids

__all__ = ["Scheduler", "SchedulerWarning", "TokenEvent"]


class SchedulerWarning(UserWarning):
    """Something about the requests the scheduler serves in a slower way, said once."""


class Scheduler:
    """Continuous batching over ``model`` (module docstring).

    ``tokenizer``: for text, stop strings and end-of-text ids. ``chain``: the default for requests
    that name none (None: temperature 0.8, top-k 50, multinomial). ``batch_invariant``: None uses
    the model's batch-invariant mode when it has one (needed for a request's output to be the
    same in any batch). ``use_cache``: None uses the KV cache when the model's cache can join
    rows. ``context_length``: default the model's. ``chains``: the ChainCache that builds request
    chains given as configs (shared with a server or a job runner; default a new one).
    """

    def __init__(self, model, *, tokenizer=None, max_batch: int = 32, chain: Any = None,
                 batch_invariant: bool | None = None, use_cache: bool | None = None,
                 context_length: int | None = None, eos_token_ids=None, chains: ChainCache | None = None):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        self.context_length = context_length if context_length is not None else model_context_length(model)
        self.eos_ids = resolve_eos_ids(eos_token_ids, tokenizer)
        self.default_chain = chain
        invariant = support(model).batch_invariant if batch_invariant is None else batch_invariant
        self.core = Decoding(model, tokenizer=tokenizer, eos_ids=self.eos_ids, context_length=self.context_length,
                             batch_invariant=invariant, cached=use_cache, joins=True, max_rows=max_batch,
                             isolate_errors=True)
        self.chains = chains if chains is not None else ChainCache(resolve_chain)
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[Request, int, int]] = collections.deque()
        self._cancelled: set[int] = set()
        self._groups: dict[tuple, Group] = {}  # (chain signature, trace) -> group
        self._pending: dict[int, list[Sample | None]] = {}  # id(request) -> its samples so far
        self._said: set[str] = set()
        self._prepared = False

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
        return bool(self.core.invariant)

    @property
    def cached(self) -> bool:
        """Whether rows decode on the cached path (the model's caches join rows)."""
        return self.core.cached

    @property
    def rows(self) -> list[Row]:
        """The rows decoding now."""
        return self.core.rows

    @property
    def steps(self) -> int:
        return self.core.steps

    @property
    def busy_rows(self) -> int:
        """Active rows summed over the steps (slot utilisation = busy / steps / max_batch)."""
        return self.core.busy_rows

    @property
    def waiting(self) -> int:
        """Samples waiting for a row."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return self.core.idle and not self._waiting

    @property
    def utilisation(self) -> float:
        """The share of row slots that held a decoding row, over the steps so far."""
        return self.busy_rows / (self.steps * self.max_batch) if self.steps else 0.0

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
            done_alone = self._admit()
            events, finished = self.core.step()
            results = [r for row in finished if (r := self._finish(row)) is not None]
            if finished:
                self._groups = {k: g for k, g in self._groups.items() if g.rows}  # a server sees endless chains
        return events, done_alone + results

    def _admit(self) -> list[RequestResult]:
        """Waiting samples take free rows; those the batch cannot hold run alone (their results)."""
        with self._lock:
            free = self.max_batch - len(self.core.rows)
            taken = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
        rows, results = [], []
        for request, index, seed in taken:
            chain = self._chain(request)
            if self._alone(request, chain):
                result = self._run_alone(request, index, seed, chain)
                if result is not None:
                    results.append(result)
                continue
            trace = request.trace or 0
            key = (chain.signature(), trace)
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = Group(chain, trace or None)
            rows.append(new_row(request, index, chain, group, seed=seed, tokenizer=self.tokenizer,
                                eos_ids=self.eos_ids, context_length=self.context_length))
        self.core.admit(rows)
        return results

    # -- requests the batch cannot hold ---------------------------------------------------------------
    def _alone(self, request: Request, chain: Chain) -> bool:
        """On the cached path: a request past its window, or whose chain crops its own way."""
        if not self.core.cached:
            return False
        window = chain_window(chain, self.context_length)
        return not crops_last_window(chain) or (window is not None and
                                                len(request.prompt) + request.max_new_tokens > window)

    def _run_alone(self, request: Request, index: int, seed: int, chain: Chain) -> RequestResult | None:
        self._say_once("long", f"some samples need more positions than the context window ({self.context_length}) or "
                               "their context processor's smaller one, or crop the context their own way: they run "
                               "outside the batch, re-feeding the window each step")
        core = Decoding(self.model, tokenizer=self.tokenizer, eos_ids=self.eos_ids,
                        context_length=self.context_length, batch_invariant=self.batch_invariant,
                        cached=None if crops_last_window(chain) else False)
        core.admit([new_row(request, index, chain, Group(chain, request.trace or None), seed=seed,
                            tokenizer=self.tokenizer, eos_ids=self.eos_ids, context_length=self.context_length)])
        finished: list[Row] = []
        while not core.idle:
            finished += core.step(events=False)[1]
        return self._finish(finished[0])

    # -- results ------------------------------------------------------------------------------------
    def _finish(self, row: Row) -> RequestResult | None:
        """Record the row's sample; the request's result once all its samples are in."""
        text = row.stream.text if row.stream is not None else None
        samples = self._pending.get(id(row.request))
        if samples is None:  # cancelled meanwhile
            return None
        samples[row.index] = Sample(row.index, row.tokens, text, row.reason or "length", row.seed, row.error)
        if any(s is None for s in samples):
            return None
        del self._pending[id(row.request)]
        return RequestResult(row.request, samples)

    def _drop_cancelled(self) -> None:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            if not cancelled:
                return
            self._waiting = collections.deque(w for w in self._waiting if id(w[0]) not in cancelled)
        for key in cancelled:
            self._pending.pop(key, None)
        self.core.drop_rows([r for r in self.core.rows if id(r.request) in cancelled])

    # -- helpers -------------------------------------------------------------------------------------
    def _chain(self, request: Request) -> Chain:
        spec = request.chain if request.chain is not None else self.default_chain
        return spec if isinstance(spec, Chain) else self.chains.get(spec)

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
        if not self._prepared:
            prepare(self.model)
            self._prepared = True

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            warnings.warn(message, SchedulerWarning, stacklevel=4)
