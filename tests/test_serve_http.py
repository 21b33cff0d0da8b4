"""The HTTP layer under the app (samplekit.serve.http): malformed HTTP gets OpenAI's JSON 400, a
half-sent request is timed out (408 when its head arrived), "too many open files" on accept logs
one line now and then without a traceback, and the open files limit is raised at start."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket

import pytest

from serve_helpers import needs_serve, serve_server  # noqa: F401 - the fixture


def _raw(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n{}",
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
])
def test_malformed_http_gets_openais_json_400(serve_server, request_bytes):
    reply = _raw(serve_server, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply[:300]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_http" and error["type"] == "invalid_request_error"
    assert "Traceback" not in serve_server.log()


class _Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written, self.closed = b"", False

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5), "sockname": ("127.0.0.1", 6)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


@pytest.mark.parametrize("sent, answered", [
    (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le", b""),  # the head never ends: closed
    (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"a\"", b"HTTP/1.1 408"),
    (b"", b""),  # connected, nothing sent
])
def test_a_half_sent_request_is_timed_out(monkeypatch, sent, answered):
    needs_serve()
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from samplekit.serve import limits
    from samplekit.serve.http import Protocol

    monkeypatch.setattr(limits, "READ_TIMEOUT", 0.05)

    async def app(scope, receive, send):  # waits for a body that never completes
        while (await receive())["type"] != "http.disconnect":
            pass

    async def run():
        protocol = Protocol(Config(app=app, log_level="critical"), ServerState(), {}, _loop=asyncio.get_running_loop())
        transport = _Transport()
        protocol.connection_made(transport)
        if sent:
            protocol.data_received(sent)
        await asyncio.sleep(0.5)
        return transport

    transport = asyncio.run(run())
    assert transport.closed
    assert transport.written.startswith(answered)
    if answered:
        assert json.loads(transport.written.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"


def test_too_many_open_files_on_accept_logs_one_line_without_traceback(caplog):
    needs_serve()
    from samplekit.serve.http import _AcceptErrors

    handler = _AcceptErrors()
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="samplekit.serve"):
            for _ in range(500):
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(errno.EMFILE, "Too many open files")})
    finally:
        loop.close()
    records = [r for r in caplog.records if r.name == "samplekit.serve"]
    assert len(records) == 1 and records[0].exc_info is None
    assert "Too many open files" in records[0].getMessage()
    assert handler.dropped == 499


def test_the_open_files_soft_limit_is_raised_to_the_hard_one():
    needs_serve()
    resource = pytest.importorskip("resource")
    from samplekit.serve.http import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        assert raise_open_files_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if hard != resource.RLIM_INFINITY:
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
