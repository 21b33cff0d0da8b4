"""Many concurrent streaming clients against a server: what came back, how fast, and whether each
client got its own completion (the same text as its request made alone).

    python -m samplekit.serve.loadtest --clients 64 --max-tokens 16 --out benchmarks-serve.md

Without ``--url`` it starts ``samplekit serve`` on the demo model (``--threads``, ``--max-batch``).
The load test in tests/test_serve_load.py uses the same functions. Needs httpx (``serve-test``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

PROMPTS = ("ROMEO:", "JULIET:", "KING HENRY:", "First Citizen:", "HAMLET:", "O, ", "What say you", "Enter")


@dataclass
class Reply:
    """One streamed request: its text, chunk ids, timings (seconds) and what went wrong."""

    index: int
    text: str = ""
    ids: set = field(default_factory=set)
    finish: str | None = None
    done: bool = False
    status: int = 0
    error: str | None = None
    first: float | None = None  # time to the first token
    total: float | None = None
    tokens: int = 0


def bodies(count: int, max_tokens: int) -> list[dict]:
    """``count`` distinct seeded streaming requests (prompts, seeds and chains vary)."""
    out = []
    for i in range(count):
        body = {"model": "demo", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "seed": 1000 + i,
                "stream": True, "stream_options": {"include_usage": True}}
        if i % 3 == 1:
            body["top_p"] = 0.9
        elif i % 3 == 2:
            body["temperature"] = 1.1
        out.append(body)
    return out


async def one(client, url: str, index: int, body: dict, headers: dict) -> Reply:
    reply = Reply(index)
    start = time.perf_counter()
    try:
        async with client.stream("POST", url + "/v1/completions", json=body, headers=headers) as response:
            reply.status = response.status_code
            if response.status_code != 200:
                reply.error = (await response.aread()).decode("utf-8", "replace")[:300]
                return reply
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    reply.done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    reply.error = chunk["error"]["message"]
                    break
                reply.ids.add(chunk["id"])
                if chunk.get("usage"):
                    reply.tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk["choices"]:
                    if reply.first is None and choice["text"]:
                        reply.first = time.perf_counter() - start
                    reply.text += choice["text"]
                    reply.finish = choice["finish_reason"] or reply.finish
    except Exception as exc:  # noqa: BLE001 - a lost request is a result to report
        reply.error = f"{type(exc).__name__}: {exc}"
    reply.total = time.perf_counter() - start
    return reply


async def run(url: str, requests: list[dict], *, key: str | None = None, concurrent: bool = True) -> list[Reply]:
    """Send every request (all at once, or one after another) and collect the replies."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=len(requests) + 4, max_keepalive_connections=len(requests) + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        if concurrent:
            return list(await asyncio.gather(*(one(client, url, i, b, headers) for i, b in enumerate(requests))))
        return [await one(client, url, i, b, headers) for i, b in enumerate(requests)]


def measure(url: str, clients: int, max_tokens: int, key: str | None = None) -> dict:
    """The load run and the alone run; figures and every mismatch."""
    requests = bodies(clients, max_tokens)
    start = time.perf_counter()
    replies = asyncio.run(run(url, requests, key=key))
    wall = time.perf_counter() - start
    alone = asyncio.run(run(url, requests, key=key, concurrent=False))
    wall_alone = sum(r.total or 0 for r in alone)
    tokens = sum(r.tokens for r in replies)
    latencies = sorted(r.total for r in replies if r.total is not None)
    firsts = sorted(r.first for r in replies if r.first is not None)
    problems = [f"client {r.index}: {r.error or 'no [DONE]'}" for r in replies if r.error or not r.done]
    problems += [f"client {r.index}: text differs from its request alone: {r.text!r} != {a.text!r}"
                 for r, a in zip(replies, alone) if r.text != a.text]
    ids = [next(iter(r.ids), None) for r in replies]
    if len(set(ids)) != len(ids) or any(len(r.ids) != 1 for r in replies):
        problems.append("chunk ids were shared between clients or changed within one")
    return {"clients": clients, "max_tokens": max_tokens, "tokens": tokens, "wall_s": wall,
            "throughput": tokens / wall if wall else 0.0, "p50_s": _pct(latencies, 50), "p99_s": _pct(latencies, 99),
            "ttft_p50_s": _pct(firsts, 50), "ttft_p99_s": _pct(firsts, 99),
            "alone_wall_s": wall_alone,
            "alone_throughput": sum(r.tokens for r in alone) / wall_alone if wall_alone else 0.0,
            "problems": problems, "replies": replies}


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def markdown(results: list[dict], setup: str) -> str:
    lines = ["| clients | max_tokens | tokens | wall (s) | throughput (tok/s) | p50 latency (s) | p99 latency (s) | "
             "p50 first token (s) | p99 first token (s) | one at a time (tok/s) | mismatches |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['clients']} | {r['max_tokens']} | {r['tokens']} | {r['wall_s']:.2f} | "
                     f"{r['throughput']:.0f} | "
                     f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} | "
                     f"{r['alone_throughput']:.0f} | {len(r['problems'])} |")
    return f"{setup}\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samplekit.serve.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one on the demo model)")
    parser.add_argument("--api-key")
    parser.add_argument("--clients", type=int, nargs="+", default=[64])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="append the Markdown table to this file")
    args = parser.parse_args(argv)

    from samplekit.serve.local import LocalServer

    server = None
    if not args.url:
        server = LocalServer("--max-batch", str(args.max_batch), threads=args.threads, api_key=args.api_key).start()
    url = args.url or server.url
    try:
        results = [measure(url, n, args.max_tokens, args.api_key) for n in args.clients]
        healthy = (server.health() or {}).get("status") if server else "n/a"
    finally:
        if server is not None:
            server.stop()
    import torch

    setup = (f"`python -m samplekit.serve.loadtest --clients {' '.join(map(str, args.clients))} --max-tokens "
             f"{args.max_tokens} --max-batch {args.max_batch} --threads {args.threads}` on "
             f"{time.strftime('%Y-%m-%d')}: "
             f"demo model, streaming clients all at once over localhost, then the same requests one at a time; "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, Python "
             f"{platform.python_version()}; server health after: {healthy}.")
    table = markdown(results, setup)
    print(table)
    for r in results:
        for problem in r["problems"]:
            print(problem, file=sys.stderr)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + table)
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
