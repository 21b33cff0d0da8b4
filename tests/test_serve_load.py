"""The load test: 64 concurrent streaming clients against a real server on localhost (the demo
model, short completions). Every request is answered, none is lost or mixed up (each client's
seeded completion equals the same request made alone), and the server is healthy after. The
figures (throughput, p50/p99) come from the benchmark script, samplekit.serve.loadtest."""

from __future__ import annotations

import asyncio

from serve_helpers import KEY, serve_server  # noqa: F401 - the fixture

CLIENTS = 64
MAX_TOKENS = 8


def test_64_concurrent_streaming_clients_each_get_their_own_completion(serve_server):
    from samplekit.serve.loadtest import bodies, run

    requests = bodies(CLIENTS, MAX_TOKENS)
    before = serve_server.health()["steps"]
    replies = asyncio.run(run(serve_server.url, requests, key=KEY))
    steps = serve_server.health()["steps"] - before
    assert [r.index for r in replies] == list(range(CLIENTS))
    assert all(r.status == 200 and r.done and r.error is None for r in replies), [r.error for r in replies][:3]
    assert all(r.finish in ("length", "stop") and 1 <= r.tokens <= MAX_TOKENS for r in replies)
    ids = [r.ids for r in replies]
    assert all(len(i) == 1 for i in ids) and len(set.union(*ids)) == CLIENTS  # one id each, none shared
    assert steps < CLIENTS * MAX_TOKENS / 4  # they shared batches (two waves of 32 rows: ~17 steps, not 512)

    alone = asyncio.run(run(serve_server.url, requests, key=KEY, concurrent=False))
    assert [r.text for r in replies] == [a.text for a in alone]
    assert len({r.text for r in replies}) > CLIENTS // 2  # distinct seeds and prompts: distinct texts
    health = serve_server.health()
    assert health["status"] == "ok" and health["in_flight"] == 0 and health["active_rows"] == 0
