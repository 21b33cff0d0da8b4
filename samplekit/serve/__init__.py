"""``samplekit serve``: an OpenAI-compatible HTTP server over the continuous-batching scheduler,
and a playground page.

    samplekit serve --checkpoint demo --port 8000        # then any OpenAI client, or http://127.0.0.1:8000/

Modules: ``limits`` (every bound a request meets), ``errors`` (OpenAI-shaped errors),
``mapping`` (request fields -> a samplekit chain: the one table), ``structured`` (structured
outputs and tool calls -> a grammar-plugin constraint), ``protocol`` (a request body ->
scheduler requests), ``scoring`` (a prompt's own log-probabilities), ``responses`` (results and
events -> OpenAI's JSON and stream chunks), ``chat`` (chat templates), ``engine`` (the
scheduler thread and its asyncio bridge), ``app`` (the FastAPI app), ``http`` (the connection
layer under it: JSON 400s for malformed HTTP, the read timeout, accept errors), ``static/`` (the
playground). Tools around it: ``local`` (a server in a
subprocess on a free port), ``loadtest`` (the load benchmark), ``browser`` and ``screenshot``
(the playground in headless Chromium).

FastAPI, uvicorn and sse-starlette come with the ``serve`` extra and are imported only by
``app`` and ``http`` (and the command); the rest of samplekit never imports them.
"""

from __future__ import annotations

import importlib

from samplekit.errors import SampleKitError

EXTRA = "pip install 'samplekit-lm[serve]'"
REQUIRED = ("fastapi", "uvicorn", "sse_starlette")


class MissingExtraError(SampleKitError, ImportError):
    """The ``serve`` extra (FastAPI, uvicorn, sse-starlette) is not installed."""


def require_serve() -> None:
    """Import the serve extra's packages, or raise MissingExtraError saying what to install."""
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingExtraError(f"samplekit serve needs {name.replace('_', '-')}, which is not installed: "
                                    f"{EXTRA}") from None
