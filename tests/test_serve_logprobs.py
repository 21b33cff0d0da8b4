"""Log-probabilities through ``samplekit serve`` (the shared demo-model server): the prompt's own
(``echo`` with ``logprobs``, ``max_tokens: 0`` to score only, vLLM's ``prompt_logprobs``),
``logprobs: 0``, those after the chain (``samplekit.logprobs: processed``, vLLM's
``logprobs_mode``), and the compatibility fields ``n_probs``, ``include_stop_str_in_output`` and
``best_of``."""

from __future__ import annotations

import json

import pytest

from serve_helpers import post, serve_server  # noqa: F401 - the fixture

PROMPT = "ROMEO: But soft, what light"


def complete(server, **body):
    response = post(server, "/v1/completions", {"model": "demo", "prompt": PROMPT, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_echo_with_max_tokens_0_scores_the_prompt_first_token_null(serve_server):
    body = complete(serve_server, echo=True, logprobs=2, max_tokens=0)
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == PROMPT and choice["finish_reason"] == "length"
    assert "".join(lp["tokens"]) == PROMPT and len(lp["tokens"]) == body["usage"]["prompt_tokens"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(x < 0 for x in lp["token_logprobs"][1:])
    assert lp["text_offset"][0] == 0 and body["usage"]["completion_tokens"] == 0
    for token, logprob, top in zip(lp["tokens"][1:], lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
        assert top[token] == pytest.approx(logprob) and max(top.values()) >= logprob


def test_a_scored_token_has_the_logprob_the_scheduler_gave_it_when_generated(serve_server):
    """Scoring (one forward over the prompt) and generation (the scheduler) agree."""
    generated = complete(serve_server, temperature=0, max_tokens=1, logprobs=1)
    choice = generated["choices"][0]
    token_text, logprob = choice["logprobs"]["tokens"][0], choice["logprobs"]["token_logprobs"][0]
    scored = complete(serve_server, prompt=PROMPT + token_text, echo=True, logprobs=1, max_tokens=1)
    lp = scored["choices"][0]["logprobs"]
    n = scored["usage"]["prompt_tokens"]
    assert lp["tokens"][n - 1] == token_text
    assert lp["token_logprobs"][n - 1] == pytest.approx(logprob, abs=1e-4)
    assert len(lp["tokens"]) == n + scored["usage"]["completion_tokens"]  # the prompt's, then the generated


def test_vllm_prompt_logprobs_lists_each_prompt_token_by_id(serve_server):
    body = complete(serve_server, prompt_logprobs=3, max_tokens=0)
    prompt = body["choices"][0]["prompt_logprobs"]
    assert prompt[0] is None and len(prompt) == body["usage"]["prompt_tokens"]
    for entry in prompt[1:]:
        assert 3 <= len(entry) <= 4
        assert all(v["logprob"] <= 0 and v["rank"] >= 1 for v in entry.values())
        assert sorted(v["rank"] for v in entry.values())[:3] == [1, 2, 3]


def test_logprobs_0_gives_the_sampled_tokens_own_logprob(serve_server):
    body = complete(serve_server, logprobs=0, max_tokens=5, seed=3)
    lp = body["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == body["usage"]["completion_tokens"]
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert top == {token: logprob} and logprob <= 0


def test_processed_logprobs_are_after_the_chain(serve_server):
    chain = {"chain": [{"top_k": 1}, "multinomial"]}
    raw = complete(serve_server, logprobs=2, max_tokens=5, seed=3, samplekit=chain)
    processed = complete(serve_server, logprobs=2, max_tokens=5, seed=3, samplekit={**chain, "logprobs": "processed"})
    assert processed["choices"][0]["text"] == raw["choices"][0]["text"]  # what is reported, never what is drawn
    assert all(x == pytest.approx(0.0, abs=1e-6) for x in processed["choices"][0]["logprobs"]["token_logprobs"])
    assert any(x < -1e-3 for x in raw["choices"][0]["logprobs"]["token_logprobs"])
    for top in processed["choices"][0]["logprobs"]["top_logprobs"]:  # top_k 1: one token left, the rest -inf
        assert sorted(top.values())[-1] == pytest.approx(0.0, abs=1e-6)
    vllm = complete(serve_server, logprobs=2, max_tokens=5, seed=3, logprobs_mode="processed_logprobs",
                    samplekit=chain)
    assert vllm["choices"][0]["logprobs"] == processed["choices"][0]["logprobs"]
    temp = complete(serve_server, logprobs=1, max_tokens=3, seed=5, temperature=0.5, logprobs_mode="processed_logprobs")
    plain = complete(serve_server, logprobs=1, max_tokens=3, seed=5, temperature=0.5)
    for sharp, raw_top in zip(temp["choices"][0]["logprobs"]["top_logprobs"],
                              plain["choices"][0]["logprobs"]["top_logprobs"]):
        assert max(sharp.values()) > max(raw_top.values())  # t 0.5 sharpens: the most probable token gains


def test_n_probs_is_logprobs_and_include_stop_str_keeps_the_stop(serve_server):
    a = complete(serve_server, n_probs=2, max_tokens=4, seed=7)
    b = complete(serve_server, logprobs=2, max_tokens=4, seed=7)
    assert a["choices"][0]["logprobs"] == b["choices"][0]["logprobs"]
    plain = complete(serve_server, temperature=0, max_tokens=40)["choices"][0]["text"]
    stop = plain[5:7]
    cut = complete(serve_server, temperature=0, max_tokens=40, stop=[stop])["choices"][0]
    kept = complete(serve_server, temperature=0, max_tokens=40, stop=[stop], include_stop_str_in_output=True)
    assert cut["finish_reason"] == "stop" and kept["choices"][0]["text"] == cut["text"] + stop
    assert plain.startswith(kept["choices"][0]["text"])


@pytest.mark.parametrize("body, param, says", [
    ({"best_of": 2}, "best_of", "send n"),
    ({"max_tokens": 0}, "max_tokens", "scoring"),
    ({"logprobs_mode": "raw_logits"}, "logprobs_mode", "processed_logprobs"),
    ({"samplekit": {"logprobs": "final"}}, "samplekit", "processed"),
    ({"n_probs": 2, "logprobs": 2}, "n_probs", "give one"),
    ({"prompt_logprobs": 21}, "prompt_logprobs", "[0, 20]"),
    ({"include_stop_str_in_output": "yes"}, "include_stop_str_in_output", "boolean"),
    ({"prompt": "\ud800"}, "prompt", "surrogate"),
    ({"logit_bias": {"hello world": 5}}, "logit_bias", "not a token id"),
    ({"samplekit": {"chain": [{"logit_bias": {"bias": {"ROMEO and JULIET": 5}}}, "multinomial"]}}, "samplekit",
     "not one"),
    ({"bad_words": ["x"] * 200}, "bad_words", "at most 128"),
    ({"bad_words": ["x" * 1025, "y" * 1024]}, "bad_words", "2048 characters"),
    ({"samplekit": {"chain": [{"banned_strings": {"strings": [f"w{i}" for i in range(300)]}}, "multinomial"]}},
     "samplekit", "at most 128"),
])
def test_refusals_name_the_field_and_what_to_send(serve_server, body, param, says):
    sent = {"model": "demo", "prompt": PROMPT, "max_tokens": 2, **body}
    response = post(serve_server, "/v1/completions", None, raw=json.dumps(sent).encode())  # \ud800 escaped
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error


def _stream(server, body) -> list[dict]:
    import httpx

    from serve_helpers import KEY

    out = []
    with httpx.stream("POST", server.url + "/v1/completions", json={"model": "demo", "prompt": PROMPT, **body,
                                                                    "stream": True},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


def test_streams_match_the_whole_responses(serve_server):
    whole = complete(serve_server, echo=True, logprobs=1, max_tokens=3, seed=8)["choices"][0]
    chunks = [c["choices"][0] for c in _stream(serve_server, {"echo": True, "logprobs": 1, "max_tokens": 3, "seed": 8})]
    assert chunks[0]["text"] == PROMPT and "".join(chunks[0]["logprobs"]["tokens"]) == PROMPT
    assert "".join(c["text"] for c in chunks) == whole["text"]
    streamed = [lp for c in chunks for lp in (c["logprobs"] or {}).get("token_logprobs", [])]
    assert streamed == whole["logprobs"]["token_logprobs"]
    stop = complete(serve_server, temperature=0, max_tokens=40)["choices"][0]["text"][5:7]
    kept = complete(serve_server, temperature=0, max_tokens=40, stop=[stop], include_stop_str_in_output=True)
    chunks = [c["choices"][0] for c in _stream(serve_server, {"temperature": 0, "max_tokens": 40, "stop": [stop],
                                                              "include_stop_str_in_output": True})]
    assert "".join(c["text"] for c in chunks) == kept["choices"][0]["text"] and chunks[-1]["finish_reason"] == "stop"
    scored = [c["choices"][0] for c in _stream(serve_server, {"echo": True, "logprobs": 0, "max_tokens": 0})]
    assert scored[0]["text"] == PROMPT and scored[-1]["finish_reason"] == "length"
