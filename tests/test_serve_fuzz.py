"""A seeded fuzz of ``samplekit serve``'s request bodies (``--model`` with a tiny random Llama and
a chat template, so both endpoints and the Hugging Face tokenizer path are reached).

Invariant: every body, however hostile, is answered within a bounded time by a 200 or by an
OpenAI-shaped JSON error with a 4xx status (never a 500), and the server logs no traceback."""

from __future__ import annotations

import json
import random

import pytest

from serve_helpers import KEY, llama_server

SEED, BODIES = 20, 240
FIELDS = ["prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "min_p", "n", "best_of", "stop",
          "seed", "stream", "logprobs", "top_logprobs", "echo", "logit_bias", "presence_penalty",
          "frequency_penalty", "repetition_penalty", "bad_words", "min_tokens", "stop_token_ids", "ignore_eos",
          "samplers", "samplekit", "response_format", "structured_outputs", "json_schema", "grammar", "tools",
          "tool_choice", "prompt_logprobs", "logprobs_mode", "n_probs", "include_stop_str_in_output",
          "stream_options", "user", "model", "mirostat", "dry_multiplier", "xtc_probability", "no_such_field"]
VALUES = [None, True, False, 0, 1, -1, 2, 7, 4096, 10**30, 0.5, -0.5, 1.2e-38, 1e-45, 3.5e38, 1e308, "", "x",
          "\ud800", "ROMEO:", "a" * 5000, [], [1, 2, 3], [-1], ["\n"], [""], [[1, 2], [3]], {}, {"1": 5},
          {"hello world": 1}, {"1": 1e9}, {"type": "json_object"}, {"type": "json_schema"},
          {"type": "json_schema", "json_schema": {"schema": {"type": "integer", "minimum": 0, "maximum": 9}}},
          {"json": {"type": "boolean"}}, {"regex": "[^\\s\\S]"}, {"choice": ["a", "b"]}, {"grammar": "root ::= "},
          {"chain": ["greedy"]}, {"chain": [{"top_k": 0}, "multinomial"]}, {"preset": "balanced", "logprobs": "x"},
          {"logprobs": "processed"}, {"include_usage": True}, "required", "auto", "none",
          [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
          [{"role": "user", "content": "hi"}], [{"role": "developer", "content": "x", "extra": 1}],
          [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}], [{"role": "wizard"}], "raw_logprobs"]
BASE = {"completion": {"prompt": "ROMEO:", "max_tokens": 3}, "chat": {"messages": [{"role": "user", "content": "hi"}],
                                                                     "max_tokens": 3}}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    with llama_server(tmp_path_factory.mktemp("fuzz"), context=128) as server:
        yield server


def bodies(rng: random.Random):
    """(endpoint, body) pairs: a valid body with 1 to 4 fields replaced by hostile values."""
    for _ in range(BODIES):
        kind = rng.choice(["completion", "chat"])
        body = dict(BASE[kind])
        for _ in range(rng.randint(1, 4)):
            body[rng.choice(FIELDS)] = rng.choice(VALUES)
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 16 and rng.random() < 0.9:
            body["max_tokens"] = 16  # mostly short generations: the fuzz is about the parsing
        yield kind, body


def test_every_fuzzed_body_gets_a_200_or_an_openai_json_4xx_and_no_traceback(fuzz_server):
    import httpx

    seen = set()
    with httpx.Client(base_url=fuzz_server.url, headers={"Authorization": f"Bearer {KEY}",
                                                         "Content-Type": "application/json"}, timeout=60) as client:
        for kind, body in bodies(random.Random(SEED)):
            path = "/v1/completions" if kind == "completion" else "/v1/chat/completions"
            raw = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes
            response = client.post(path, content=raw)
            where = f"{path} {raw[:300]!r}: {response.status_code} {response.text[:300]}"
            seen.add(response.status_code)
            assert response.status_code in (200, 400, 404, 413), where
            if response.status_code == 200:
                if body.get("stream") is True:
                    assert response.text.rstrip().endswith("data: [DONE]"), where
                else:
                    assert response.json()["choices"], where
            else:
                error = response.json()["error"]
                assert isinstance(error["message"], str) and error["message"], where
                assert error["param"] is None or isinstance(error["param"], str), where
    assert {200, 400} <= seen
    log = fuzz_server.log()
    assert "Traceback" not in log and "Internal Server Error" not in log, log[-3000:]
