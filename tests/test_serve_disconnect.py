"""Nothing decodes for nobody: 64 non-streaming requests of 4,096 tokens whose clients drop are
cancelled (the scheduler's rows freed long before 4,096 steps), and a new request is then served.
The model is a tiny random-weight Llama with an 8,192-token context (tests/hf_fixtures.py)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from serve_helpers import KEY, get, llama_server, post


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    with llama_server(tmp_path_factory.mktemp("long"), template=None, max_batch=64, context=8192, hidden=16,
                      layers=1, heads=2, kv_heads=1) as server:
        yield server


def _send(server, body: dict) -> socket.socket:
    """A raw HTTP request whose client can then vanish (close the socket)."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def _wait_for(server, condition, what: str, bound: float = 120.0) -> dict:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        health = get(server, "/health").json()
        if condition(health):
            return health
        time.sleep(0.05)
    raise AssertionError(f"{what} not seen within {bound:.0f} s: {health}")


def test_dropped_non_streaming_clients_free_their_rows_and_a_new_request_is_served(long_server):
    body = {"model": long_server.model, "prompt": "Once upon a time", "max_tokens": 4096, "ignore_eos": True,
            "seed": 1}
    socks = [_send(long_server, body) for _ in range(64)]
    busy = _wait_for(long_server, lambda h: h["active_rows"] == 64, "64 rows decoding")
    assert busy["in_flight"] == 64
    for s in socks:
        s.close()
    freed = _wait_for(long_server, lambda h: h["active_rows"] == 0 and h["in_flight"] == 0, "the rows freed")
    assert freed["steps"] < 4096, "the abandoned requests decoded to the end"
    response = post(long_server, "/v1/completions", {"model": long_server.model, "prompt": "Once", "max_tokens": 3,
                                                     "seed": 2})
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] <= 3
    assert "Traceback" not in long_server.log()
