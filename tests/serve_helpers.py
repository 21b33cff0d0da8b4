"""The server the tests/test_serve_*.py files share: ``samplekit serve`` on the demo model, in a
subprocess on a free localhost port, with an API key; started once per test session.

    def test_x(serve_server):      # the fixture (imported by each file from here)
        client = openai_client(serve_server)
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path

import pytest

KEY = "test-key-0123"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
_shared: dict = {}


def needs_serve() -> None:
    """Skip, saying why, when the serve extra or its test clients are missing."""
    for module, extra in (("fastapi", "serve"), ("uvicorn", "serve"), ("sse_starlette", "serve"),
                          ("openai", "serve-test"), ("httpx", "serve-test")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install 'samplekit-lm[{extra}]'")


@contextmanager
def llama_server(root: Path, *, template: str | None = CHAT_TEMPLATE, max_batch: int = 8, **sizes):
    """``samplekit serve --model`` on a tiny random Llama saved in ``root`` (tests/hf_fixtures.py:
    ``sizes`` go to model_folder) with a byte-level tokenizer whose chat template is ``template``
    (None: no template). Skips without the serve extra, transformers or tokenizers. The server
    carries ``.tokenizer`` and ``.model`` (the folder's name); it is stopped on the way out."""
    needs_serve()
    for module in ("transformers", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install 'samplekit-lm[bench]'")
    from hf_fixtures import byte_level_tokenizer, model_folder
    from samplekit.serve.local import LocalServer

    tokenizer = byte_level_tokenizer()
    if template is not None:
        tokenizer.chat_template = template
    folder = model_folder(root, "llama", tokenizer=tokenizer, **sizes)
    with LocalServer("--model", str(folder), "--max-batch", str(max_batch), api_key=KEY) as server:
        server.tokenizer, server.model = tokenizer, folder.name
        yield server


@pytest.fixture
def serve_server(request):
    """The shared LocalServer (``.url``), started on first use, stopped when the session ends."""
    needs_serve()
    server = _shared.get("server")
    if server is None or server.process.poll() is not None:
        from samplekit.serve.local import LocalServer

        server = LocalServer("--max-batch", "32", api_key=KEY).start()
        _shared["server"] = server
        request.config.add_cleanup(server.stop)
    return server


def openai_client(server, key: str = KEY, **options):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120, **options)


def post(server, path: str, body, *, key: str | None = KEY, headers: dict | None = None, raw: bytes | None = None):
    """A plain HTTP POST (httpx), for what the openai client would not send."""
    import httpx

    sent = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {}),
            **(headers or {})}
    if raw is not None:
        return httpx.post(server.url + path, content=raw, headers=sent, timeout=120)
    return httpx.post(server.url + path, json=body, headers=sent, timeout=120)


def get(server, path: str, *, key: str | None = KEY, headers: dict | None = None):
    import httpx

    sent = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    return httpx.get(server.url + path, headers=sent, timeout=60)
