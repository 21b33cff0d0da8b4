"""The HTTP connection layer under the app: what uvicorn would otherwise answer or log itself.

- ``Protocol`` (uvicorn's h11 protocol, passed as ``uvicorn.run(http=Protocol)``): a request
  that is not valid HTTP (a duplicate ``Host``, ``Content-Length: -1``, a bad request line) gets
  OpenAI's JSON error body with status 400 instead of uvicorn's plain text; a client that has not
  sent its whole request (line, headers and body) within ``limits.READ_TIMEOUT`` seconds of the
  connection (or of its previous response) is answered 408 when it can be, and disconnected.
- ``quiet_accept_errors``: the event loop's handler for "socket.accept() out of system resource"
  (too many open files) logs one line, at most once every ``ACCEPT_LOG_EVERY`` seconds, never a
  traceback per attempt (asyncio retries the accept a second later by itself).
- ``raise_open_files_limit``: the soft ``RLIMIT_NOFILE`` raised to the hard limit at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from samplekit.serve import limits
from samplekit.serve.errors import error_body

log = logging.getLogger("samplekit.serve")
ACCEPT_LOG_EVERY = 10.0  # seconds between two "too many open files" lines


class Protocol(H11Protocol):
    """uvicorn's h11 protocol with JSON 400s and a read timeout."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets its own time

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self._send_json(400, error_body(f"the request is not valid HTTP: {msg}", "invalid_request_error", None,
                                        "invalid_http"))

    # -- the read timeout ---------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(limits.READ_TIMEOUT, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return  # the request is whole: it is being answered
        if self.conn.their_state is h11.IDLE and self.cycle is None and not self.conn.trailing_data[0] \
                and self.timeout_keep_alive_task is not None:
            return  # an idle keep-alive connection: uvicorn's keep-alive timeout closes it
        if self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.SEND_RESPONSE:
            try:  # the head arrived, the body did not: say so before closing
                self._send_json(408, error_body(f"the request body did not arrive within {limits.READ_TIMEOUT:g} s",
                                                "invalid_request_error", None, "request_timeout"))
                return
            except h11.LocalProtocolError:
                pass
        self.transport.close()

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                   (b"connection", b"close")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)))
            self.transport.write(self.conn.send(h11.Data(data=data)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        finally:
            self.transport.close()


# -- accept errors and the open files limit ---------------------------------------------------------------

class _AcceptErrors:
    """The loop's exception handler: accept failures logged briefly, the rest as asyncio would."""

    def __init__(self):
        self.last = 0.0
        self.dropped = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")) or not isinstance(context.get("exception"), OSError):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < ACCEPT_LOG_EVERY:
            self.dropped += 1
            return
        more = f" ({self.dropped} more since the last message)" if self.dropped else ""
        log.warning("cannot accept connections: %s; retrying each second%s", context["exception"], more)
        self.last, self.dropped = now, 0


def quiet_accept_errors(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the accept-error handler on ``loop`` (the running one by default)."""
    (loop or asyncio.get_running_loop()).set_exception_handler(_AcceptErrors())


def raise_open_files_limit() -> int | None:
    """Raise the soft limit on open files to the hard one; the new soft limit (None: unknown)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft
