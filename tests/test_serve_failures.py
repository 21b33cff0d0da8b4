"""A sample that ends in failure reaches the client as an error, never as a success: vLLM's way
for its finish reason "error" (an HTTP 500 error body; in a stream an error event, then
[DONE]). A grammar that passes validation but hits llguidance's limit mid-generation ends its row
with "constraint_error"."""

from __future__ import annotations

import json

import pytest

from samplekit.requests import Sample
from samplekit.serve.responses import failure
from serve_helpers import KEY, post, serve_server  # noqa: F401 - the fixture

MID_GENERATION_LIMIT = 'start: B a\nB: /[bc]{24}/\na: "x" a'  # tests/test_hostile_grammar.py's
BROKEN = {"model": "demo", "prompt": "ROMEO:", "max_tokens": 40,
          "samplekit": {"chain": [{"grammar": {"lark": MID_GENERATION_LIMIT}}, "greedy"]}}


@pytest.mark.parametrize("reason", ["length", "time", "eos", "stop", "constraint", "tool_calls"])
def test_a_successful_finish_reason_is_no_failure(reason):
    assert failure(reason) is None


@pytest.mark.parametrize("reason", ["constraint_error", "error", "my_plugin_error"])
def test_a_finish_reason_ending_in_error_is_a_500_naming_it(reason):
    error = failure(reason)
    assert error is not None and error.status == 500 and error.code == "generation_failed"
    assert repr(reason) in error.message


def test_a_chain_that_raised_is_a_500_with_what_it_raised():
    error = failure("error", "ValueError: boom")
    assert error.status == 500 and error.message == "generation failed: ValueError: boom"


def test_samples_finish_reasons_are_the_ones_the_mapping_reads():
    """The Sample fields failure() is given exist under these names."""
    fields = Sample.__dataclass_fields__
    assert "finish_reason" in fields and "error" in fields


@pytest.fixture
def grammar():
    pytest.importorskip("samplekit_grammar", reason="the samplekit-grammar plugin")


def test_a_constraint_failing_mid_generation_is_an_http_500_not_a_stop(serve_server, grammar):
    response = post(serve_server, "/v1/completions", BROKEN)
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["code"] == "generation_failed" and "constraint_error" in error["message"], error
    assert "choices" not in response.json()


def test_a_streamed_constraint_failure_ends_with_an_error_event_then_done(serve_server, grammar):
    import httpx

    data = []
    with httpx.stream("POST", serve_server.url + "/v1/completions", json={**BROKEN, "stream": True},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                data.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    assert data[-1] == "[DONE]"
    assert data[-2]["error"]["code"] == "generation_failed" and "constraint_error" in data[-2]["error"]["message"]
    finishes = [c["finish_reason"] for d in data[:-2] for c in d.get("choices", ())]
    assert not any(finishes), finishes  # no chunk claimed a successful end
