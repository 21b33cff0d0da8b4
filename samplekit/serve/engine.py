"""The scheduler thread and its asyncio bridge.

One thread steps the scheduler while it has work and sleeps while it is idle. Handlers submit
their requests from the event loop (``submit``, thread-safe) and read what comes back from their
``Ticket``'s asyncio queue: after every step the thread hands each ticket its token events and
finished results in one ``loop.call_soon_threadsafe``. ``cancel`` (a client that went away)
frees the request's rows at the next step. ``call(fn)`` runs ``fn(model)`` on the same thread
between two steps (scoring a prompt: the model is never used by two threads at once).

If a step raises (a processor error, a bug), every request in flight gets the error (a
``SampleKitError``'s own message; anything else a generic one, logged with its traceback) and the
engine starts again from a fresh scheduler, so the server stays up.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

from samplekit.errors import SampleKitError
from samplekit.requests import Request
from samplekit.serve import limits
from samplekit.serve.errors import APIError, internal

log = logging.getLogger("samplekit.serve")


class Ticket:
    """One API request's scheduler requests, and the queue their events arrive on. Items:
    ``("step", events, results)`` and ``("error", APIError)``."""

    def __init__(self, requests: list[Request], loop: asyncio.AbstractEventLoop):
        self.requests = requests
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.left = len(requests)  # requests not finished

    def push(self, item: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening
            pass


class Engine:
    """Serves requests with the scheduler that ``make_scheduler()`` builds (again after a failure)."""

    def __init__(self, make_scheduler: Callable[[], Any]):
        self.make_scheduler = make_scheduler
        self.scheduler = make_scheduler()
        self._tickets: dict[int, Ticket] = {}  # id(request) -> its ticket
        self._lock = threading.Lock()  # the tickets, and the scheduler while it is replaced
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._let_go: list[Request] = []  # cancelled requests, kept until a step has dropped them
        self._calls: collections.deque = collections.deque()  # (fn, future, loop) to run between steps
        self.failures = 0
        self.served = 0

    # -- life -----------------------------------------------------------------------------------------
    def start(self, warm: list[int] | None = None) -> None:
        """Start the thread (after one short warm-up request on ``warm``, a prompt's ids)."""
        if warm:
            list(self.scheduler.run([Request(prompt=list(warm), max_new_tokens=2, seed=0)]))
        self._thread = threading.Thread(target=self._loop, name="samplekit-scheduler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        s = self.scheduler
        return {"in_flight": len({id(t) for t in list(self._tickets.values())}), "active_rows": len(s.rows),
                "waiting": s.waiting, "max_batch": s.max_batch, "steps": s.steps,
                "served": self.served, "failures": self.failures}

    # -- from the event loop -------------------------------------------------------------------------------
    def submit(self, requests: list[Request]) -> Ticket:
        """Queue the requests; their events arrive on the returned ticket's queue."""
        ticket = Ticket(requests, asyncio.get_running_loop())
        with self._lock:
            if len({id(t) for t in self._tickets.values()}) >= limits.MAX_IN_FLIGHT:
                raise APIError(429, f"the server is busy: {limits.MAX_IN_FLIGHT} requests in flight; retry later",
                               code="busy")
            submitted = []
            try:
                for r in requests:
                    self._tickets[id(r)] = ticket
                    self.scheduler.submit(r)
                    submitted.append(r)
            except Exception:
                for r in requests:
                    self._tickets.pop(id(r), None)
                for r in submitted:
                    self.scheduler.cancel(r)
                self._let_go += submitted
                raise
        self._wake.set()
        return ticket

    def call(self, fn: Callable[[Any], Any]) -> asyncio.Future:
        """``fn(model)`` on the scheduler's thread between two steps; awaitable for its result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._calls.append((fn, future, loop))
        self._wake.set()
        return future

    def cancel(self, ticket: Ticket) -> None:
        """Stop the ticket's unfinished requests at the next step (a client that went away)."""
        with self._lock:
            for r in ticket.requests:
                if self._tickets.get(id(r)) is ticket:
                    del self._tickets[id(r)]
                    self.scheduler.cancel(r)
                    self._let_go.append(r)
        self._wake.set()

    # -- the thread ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._run_calls()
            scheduler = self.scheduler
            if scheduler.idle and not self._let_go:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            with self._lock:
                dropping = len(self._let_go)  # cancelled before this step: it drops them
            try:
                events, results = scheduler.step()
            except Exception as exc:  # noqa: BLE001 - reported to the requests, logged, then a fresh start
                self._fail(exc)
                continue
            with self._lock:
                del self._let_go[:dropping]
            self._deliver(events, results)

    def _run_calls(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn, future, loop = self._calls.popleft()
            try:
                outcome = (True, fn(self.scheduler.model))
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting handler
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop is closed
                pass

    def _deliver(self, events, results) -> None:
        by_ticket: dict[int, tuple[Ticket, list, list]] = {}
        with self._lock:
            for e in events:
                ticket = self._tickets.get(id(e.request))
                if ticket is not None:
                    by_ticket.setdefault(id(ticket), (ticket, [], []))[1].append(e)
            for r in results:
                ticket = self._tickets.pop(id(r.request), None)
                if ticket is not None:
                    by_ticket.setdefault(id(ticket), (ticket, [], []))[2].append(r)
                    ticket.left -= 1
                    self.served += ticket.left == 0
        for ticket, evs, res in by_ticket.values():
            ticket.push(("step", evs, res))

    def _fail(self, exc: Exception) -> None:
        """Every request in flight gets the error; a fresh scheduler takes over."""
        self.failures += 1
        if isinstance(exc, SampleKitError):
            log.warning("a step failed, every request in flight fails with it: %s", exc)
            error = APIError(500, f"generation failed: {exc}", code="generation_failed")
        else:
            log.exception("a step failed (a bug), every request in flight fails with it")
            error = internal()
        with self._lock:
            tickets = {id(t): t for t in self._tickets.values()}
            self._tickets.clear()
            self._let_go.clear()
            self.scheduler = self.make_scheduler()
        for ticket in tickets.values():
            ticket.push(("error", error))


def _settle(future: asyncio.Future, outcome: tuple[bool, Any]) -> None:
    if future.done():  # the handler went away
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
