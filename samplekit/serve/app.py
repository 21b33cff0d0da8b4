"""The FastAPI app: OpenAI-compatible endpoints over the engine, and the playground page.

    POST /v1/completions, POST /v1/chat/completions     (stream: server-sent events, then [DONE])
    GET  /v1/models, /v1/models/{id}, /v1/processors (what `samplekit processors --json` lists),
         /v1/presets (the bundled presets, resolved), /v1/config (the server's default fields)
    GET  /health                                         (never needs the key)
    GET  /, /static/...                                  (the playground: static files)

With an API key every path but ``/health`` and the playground's static files needs
``Authorization: Bearer KEY`` (the page holds no data; it asks for the key and sends it with its
API calls). Bound to a loopback address, the server answers only requests whose Host is a
loopback name (a web page cannot reach it through DNS rebinding). Bodies must be JSON
(``Content-Type: application/json``, which a cross-site form cannot send) of at most
``limits.MAX_BODY_BYTES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from samplekit.errors import SampleKitError
from samplekit.serve import limits, mapping, protocol, scoring
from samplekit.serve.engine import Engine
from samplekit.serve.errors import APIError, bad, error_body, from_validation, internal
from samplekit.serve.responses import Answer

log = logging.getLogger("samplekit.serve")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
PUBLIC = ("/health", "/", "/favicon.ico")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def static_folder() -> str:
    return str(resources.files("samplekit.serve") / "static")


def create_app(engine: Engine, served: protocol.Served, *, api_key: str | None = None,
               loopback: bool = True) -> FastAPI:
    """The app serving ``engine``'s model (``served`` describes it)."""
    @contextlib.asynccontextmanager
    async def lifespan(app):
        from samplekit.serve.http import quiet_accept_errors

        quiet_accept_errors()  # "too many open files": one line now and then, not a traceback per accept
        yield

    app = FastAPI(title="samplekit", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    served.eos_ids = tuple(getattr(engine.scheduler, "eos_ids", ()) or ())
    app.add_middleware(_Guard, api_key=api_key, loopback=loopback)
    _handlers(app)
    app.mount("/static", StaticFiles(directory=static_folder()), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(f"{static_folder()}/index.html", headers=PAGE_HEADERS)

    @app.get("/health")
    async def health():
        ok = engine.alive
        return JSONResponse({"status": "ok" if ok else "unavailable", "model": served.model_id,
                             **engine.stats(), "limits": limits.describe()}, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(served)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != served.model_id:
            raise APIError(404, f"model {model_id!r} does not exist; this server serves {served.model_id!r}",
                           param="model", code="model_not_found")
        return _model_card(served)

    @app.get("/v1/processors")
    async def processors():
        entries = [entry.describe() for entry in served.registry]
        return Response(json.dumps(entries, default=str), media_type="application/json")

    @app.get("/v1/presets")
    async def presets():
        from samplekit.config import load_config, preset_names, preset_path

        out = {}
        for name in preset_names():
            out[name] = load_config(preset_path(name)).resolved()["chain"]
        return Response(json.dumps(out, default=str), media_type="application/json")

    @app.get("/v1/config")
    async def config():
        chain, _ = mapping.entries(served.defaults)
        about = {"model": served.model_id, "context_length": served.context_length,
                 "eos_token_ids": list(engine.scheduler.eos_ids), "defaults": served.defaults,
                 "chain": [{n: v} for n, v in chain], "order": list(mapping.ORDER), "limits": limits.describe()}
        return Response(json.dumps(about, default=str), media_type="application/json")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _complete("completion", request, engine, served)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _complete("chat", request, engine, served)

    return app


def _model_card(served: protocol.Served) -> dict[str, Any]:
    return {"id": served.model_id, "object": "model", "created": served.created, "owned_by": "samplekit",
            "max_model_len": served.context_length}


# -- completions ---------------------------------------------------------------------------------------------

async def _complete(kind: str, request: Request, engine: Engine, served: protocol.Served):
    body = await read_json(request)
    try:  # off the event loop: templates, tokenizing and building a chain take time for large requests
        job = await asyncio.to_thread(protocol.parse, kind, body, served)
    except SampleKitError as exc:  # e.g. a tokenizer's refusal: the client's input
        raise bad(None, str(exc)) from None
    answer = Answer(job, served)
    if job.scoring is not None:
        top = job.scoring
        scored = await engine.call(lambda model: [scoring.prompt_logprobs(model, p, top) for p in job.prompts])
        answer.prompts_scored(scored)
    if job.score_only:
        if job.stream:
            return EventSourceResponse(_stream(answer, None, engine), sep="\n", ping=15,
                                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(answer.body())
    ticket = engine.submit(job.requests)
    if job.stream:
        return EventSourceResponse(_stream(answer, ticket, engine), sep="\n", ping=15,
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while not answer.finished:
            item = asyncio.ensure_future(ticket.queue.get())
            await asyncio.wait((item, gone), return_when=asyncio.FIRST_COMPLETED)
            if not item.done():  # the client went away: its rows are freed at the next step
                item.cancel()
                return Response(status_code=499)
            _take(answer, item.result())
    finally:
        gone.cancel()
        if not answer.finished:
            engine.cancel(ticket)
    return JSONResponse(answer.body())


async def _disconnected(request: Request) -> None:
    """Return when the client has gone (the body is read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _take(answer: Answer, item: tuple) -> list[dict]:
    """Apply one engine item to the answer; the stream payloads it makes (an error raises)."""
    if item[0] == "error":
        raise item[1]
    _, events, results = item
    failed = [s.error for r in results for s in r.samples if s.error is not None]
    if failed:  # the request's chain raised: its samples ended with the error (others go on)
        raise APIError(500, f"generation failed: {failed[0]}", code="generation_failed")
    payloads = answer.events(events)
    for result in results:
        payloads += answer.result(result)
    return payloads


async def _stream(answer: Answer, ticket, engine: Engine):
    """The server-sent events: one chunk per choice payload, the usage chunk, then [DONE]."""
    try:
        opening = answer.opening()
        for payload in opening:
            yield {"data": _dumps(answer.chunk([payload]))}
        if answer.job.score_only:  # max_tokens 0: each choice ends at once
            for c in answer.choices:
                yield {"data": _dumps(answer.chunk([{"index": c.index, "text": "", "logprobs": None,
                                                     "finish_reason": "length"}]))}
        while not answer.finished:
            item = await ticket.queue.get()
            try:
                payloads = _take(answer, item)
            except APIError as exc:
                yield {"data": _dumps(exc.body())}
                break
            for payload in payloads:
                yield {"data": _dumps(answer.chunk([payload]))}
        else:
            if answer.job.include_usage:
                yield {"data": _dumps(answer.usage_chunk())}
        yield {"data": "[DONE]"}
    finally:  # the client went away (or the server stops): free the rows now
        if not answer.finished and ticket is not None:
            engine.cancel(ticket)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- bodies ----------------------------------------------------------------------------------------------------

async def read_json(request: Request) -> Any:
    """The request's JSON body: ``application/json``, at most MAX_BODY_BYTES, strict JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(415, f"send the body as JSON with Content-Type: application/json (got {kind or 'none'!r})",
                       code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.MAX_BODY_BYTES):
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise bad(None, f"the body is not valid JSON: {str(exc)[:200]}", code="invalid_json") from None


def _too_large() -> APIError:
    return APIError(413, f"the request body is larger than {limits.MAX_BODY_BYTES} bytes", code="body_too_large")


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# -- errors and the guard -------------------------------------------------------------------------------------

def _handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError):
        err = from_validation(exc.errors())
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = (f"not found: {request.method} {request.url.path}" if exc.status_code == 404 else
                   f"{request.method} is not allowed on {request.url.path}" if exc.status_code == 405 else
                   str(exc.detail))
        kind = {404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
        return JSONResponse(error_body(message, kind, None, exc.status_code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(internal().body(), status_code=500)


class _Guard:
    """Refuse requests with a non-loopback Host (when bound to loopback) or without the API key."""

    def __init__(self, app, *, api_key: str | None, loopback: bool):
        self.app, self.api_key, self.loopback = app, api_key, loopback

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        path = scope.get("path", "")
        error = None
        if self.loopback and "host" in headers and _hostname(headers["host"]) not in LOOPBACK_NAMES:
            error = APIError(400, f"Host {headers['host'][:100]!r} is not this server's (bound to a loopback address, "
                                  "it answers localhost, 127.0.0.1 and [::1])", code="bad_host")
        elif self.api_key is not None and path not in PUBLIC and not path.startswith("/static/"):
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
                error = APIError(401, "missing or wrong API key: send Authorization: Bearer KEY"
                                 if given else "missing API key: send Authorization: Bearer KEY",
                                 code="invalid_api_key")
        if error is None:
            return await self.app(scope, receive, send)
        response = JSONResponse(error.body(), status_code=error.status,
                                headers={"WWW-Authenticate": "Bearer"} if error.status == 401 else None)
        await response(scope, receive, send)


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
