"""``samplekit serve`` against the real ``openai`` client and plain HTTP: completions, streaming,
the sampling extras, logprobs, traces, errors in OpenAI's shape, the API key, limits, a client
that goes away, and a seeded request that gives the same text alone and among 15 others.

One real server (tests/serve_helpers.py) on the demo model, on localhost."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve_helpers import KEY, get, openai_client, post, serve_server  # noqa: F401 - the fixture

PROMPT = "ROMEO:"


def complete(server, **body):
    response = post(server, "/v1/completions", {"model": "demo", "prompt": PROMPT, **body})
    assert response.status_code == 200, response.text
    return response.json()


def sse(server, body) -> list:
    """The data lines of a streamed response, in order (JSON decoded, "[DONE]" kept)."""
    import httpx

    out = []
    with httpx.stream("POST", server.url + "/v1/completions", json={"model": "demo", "prompt": PROMPT, **body},
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- the openai client -------------------------------------------------------------------------------

def test_completion_with_the_openai_client_is_seeded_and_streams_the_same_text(serve_server):
    client = openai_client(serve_server)
    first = client.completions.create(model="demo", prompt=PROMPT, max_tokens=12, seed=3)
    again = client.completions.create(model="demo", prompt=PROMPT, max_tokens=12, seed=3)
    other = client.completions.create(model="demo", prompt=PROMPT, max_tokens=12, seed=4)
    assert first.object == "text_completion" and first.model == "demo"
    assert first.choices[0].text and first.choices[0].text == again.choices[0].text
    assert other.choices[0].text != first.choices[0].text
    assert first.usage.prompt_tokens == 4 and 1 <= first.usage.completion_tokens <= 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

    chunks = list(client.completions.create(model="demo", prompt=PROMPT, max_tokens=12, seed=3, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == first.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == first.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == first.usage.completion_tokens


def test_the_stream_is_openai_server_sent_events_ending_with_done(serve_server):
    events = sse(serve_server, {"max_tokens": 5, "seed": 1, "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert all("usage" in c for c in chunks) and chunks[-1]["usage"]["completion_tokens"] == 5
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "length") == 1


def test_sampling_extras_through_extra_body_follow_the_table(serve_server):
    client = openai_client(serve_server)
    # Server defaults (--config balanced): temperature 0.8, top_k 50; the request overrides top_k and adds top_p.
    traced = client.completions.create(model="demo", prompt=PROMPT, max_tokens=3, seed=5,
                                       extra_body={"top_k": 5, "top_p": 0.9, "samplekit": {"trace": 3}})
    trace = traced.choices[0].model_extra["samplekit_trace"]
    assert len(trace) == traced.usage.completion_tokens
    assert [s["name"] for s in trace[0]["stages"]] == ["model", "temperature", "top_k", "top_p"]
    assert trace[0]["stages"][2]["support"] == 5
    # top_k 0 and -1 mean off (vLLM, llama.cpp); temperature 0 means greedy.
    off = client.completions.create(model="demo", prompt=PROMPT, max_tokens=2, seed=5,
                                    extra_body={"top_k": -1, "samplekit": {"trace": 2}})
    assert [s["name"] for s in off.choices[0].model_extra["samplekit_trace"][0]["stages"]] == ["model", "temperature"]
    greedy = client.completions.create(model="demo", prompt=PROMPT, max_tokens=8, temperature=0, seed=1)
    greedy_chain = client.completions.create(model="demo", prompt=PROMPT, max_tokens=8, seed=2,
                                             extra_body={"samplekit": {"chain": ["greedy"]}})
    assert greedy.choices[0].text == greedy_chain.choices[0].text


def test_llama_cpp_extras_and_the_plugins_fields(serve_server):
    from samplekit.plugins import get_registry

    missing = {"dry", "xtc", "mirostat_v2"} - set(get_registry().names())
    if missing:
        pytest.skip(f"plugins not installed: {sorted(missing)}")
    client = openai_client(serve_server)
    mixed = client.completions.create(model="demo", prompt=PROMPT, max_tokens=3, seed=5, extra_body={
        "repeat_penalty": 1.2, "repeat_last_n": -1, "min_p": 0.05, "typical_p": 0.95, "dry_multiplier": 0.8,
        "xtc_probability": 0.5, "mirostat": 2, "samplekit": {"trace": 2}})
    names = [s["name"] for s in mixed.choices[0].model_extra["samplekit_trace"][0]["stages"]]
    assert names == ["model", "repetition_penalty", "dry", "temperature", "top_k", "min_p", "typical_p", "xtc"]


def test_logprobs_are_the_raw_models_in_openais_shape_and_change_nothing(serve_server):
    plain = complete(serve_server, max_tokens=10, seed=11)
    body = complete(serve_server, max_tokens=10, seed=11, logprobs=3)
    choice = body["choices"][0]
    assert choice["text"] == plain["choices"][0]["text"]
    lp = choice["logprobs"]
    n = body["usage"]["completion_tokens"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == n
    assert "".join(lp["tokens"]) == choice["text"]
    assert all(x <= 0 for x in lp["token_logprobs"])
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert 3 <= len(top) <= 4 and max(top.values()) >= logprob - 1e-9  # the top 3, and the chosen (vLLM's)
        assert top[token] == pytest.approx(logprob)


def test_n_and_several_prompts_give_one_choice_each(serve_server):
    body = complete(serve_server, prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=6, seed=2)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in body["choices"]]
    assert texts[0] != texts[1]  # sample 1 has its own seed
    alone = complete(serve_server, prompt="JULIET:", max_tokens=6, seed=2)
    assert texts[2] == alone["choices"][0]["text"]
    assert body["usage"]["prompt_tokens"] == 4 + alone["usage"]["prompt_tokens"]  # each prompt counted once


def test_stop_strings_cut_the_text(serve_server):
    body = complete(serve_server, temperature=0, max_tokens=20, stop=["\n"])
    assert body["choices"][0]["text"] == "" and body["choices"][0]["finish_reason"] == "stop"
    longer = complete(serve_server, temperature=0, max_tokens=20, stop="Ham")
    assert "Ham" not in longer["choices"][0]["text"]


def test_the_stream_carries_each_steps_trace(serve_server):
    events = sse(serve_server, {"max_tokens": 6, "seed": 9, "stream": True,
                                "samplekit": {"chain": [{"temperature": 0.7}, {"min_p": {"p": 0.1}}, "multinomial"],
                                              "trace": 4}})
    traces = [c["choices"][0]["samplekit_trace"] for c in events[:-1] if c["choices"]]
    assert len(traces) == 6
    for t in traces:
        assert [s["name"] for s in t["stages"]] == ["model", "temperature", "min_p"]
        assert all(len(s["top"]) == 4 for s in t["stages"])
        assert str(t["token"]) in t["texts"]
    text = "".join(c["choices"][0]["text"] for c in events[:-1] if c["choices"])
    assert text == "".join(t["texts"][str(t["token"])] for t in traces)


# -- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, says", [
    ("temperature", -1, "[0, inf)"),
    ("top_p", 1.5, "(0, 1]"),
    ("top_k", 2.5, "integer"),
    ("n", 17, "[1, 16]"),
    ("max_tokens", 5000, "[1, 256]"),
    ("logprobs", 21, "[0, 20]"),
    ("seed", -5, "[0, 9223372036854775807] (or -1"),
    ("stop", [""], "empty"),
    ("frequency_penalty", 3, "[-2, 2]"),
    ("logit_bias", {"99999": 1}, "[0, 4095]"),
    ("logit_bias", {"5": 500}, "out of range"),
    ("repeat_last_n", -2, "[-1, inf)"),
    ("samplers", ["top_k", "warp"], "unknown sampler"),
    ("samplekit", {"chain": [{"top_k": {"k": -1}}, "multinomial"]}, "chain[0].top_k.k"),
    ("samplekit", {"chain": ["os.system"]}, "unknown processor"),
    ("samplekit", {"chain": [{"temperature": 0.7}]}, "selector"),
    ("samplekit", {"trace": 99}, "[0, 20]"),
    ("samplekit", {"preset": "../../etc/passwd"}, "not a preset"),
    ("samplekit", {"import": "os"}, "unknown key"),
    ("suffix", "x", "not supported"),
    ("best_of", 3, "best_of = n"),
])
def test_a_bad_value_is_a_400_naming_the_field_and_what_is_allowed(serve_server, field, value, says):
    response = post(serve_server, "/v1/completions", {"model": "demo", "prompt": PROMPT, field: value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == field and error["type"] == "invalid_request_error"
    assert says in error["message"], error["message"]
    assert "Traceback" not in response.text


def test_the_openai_client_raises_bad_request_and_user_is_ignored(serve_server):
    import openai

    client = openai_client(serve_server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="demo", prompt=PROMPT, top_p=0, max_tokens=2)
    assert "top_p" in str(caught.value)
    ok = client.completions.create(model="demo", prompt=PROMPT, max_tokens=2, user="someone")
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_flat_fields_override_the_samplekit_chains_values_as_set_does(serve_server):
    chain = {"chain": [{"temperature": 0.7}, {"top_k": 40}, "multinomial"], "trace": 1}
    body = complete(serve_server, max_tokens=2, seed=4, top_k=5, min_p=0.05, samplekit=chain)
    stages = body["choices"][0]["samplekit_trace"][0]["stages"]
    assert [s["name"] for s in stages] == ["model", "temperature", "top_k", "min_p"]  # min_p in its slot
    assert stages[2]["support"] == 5  # top_k's k is the flat field's, not the chain's 40
    greedy = complete(serve_server, max_tokens=6, seed=4, temperature=0, samplekit={"preset": "balanced"})
    assert greedy["choices"][0]["text"] == complete(serve_server, max_tokens=6, temperature=0)["choices"][0]["text"]
    refused = post(serve_server, "/v1/completions", {"prompt": PROMPT, "samplers": ["top_k"],
                                                     "samplekit": {"chain": ["greedy"]}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "samplers"


def test_a_request_cannot_name_a_file_on_the_server(serve_server):
    from samplekit.plugins import get_registry

    if "json_schema" not in get_registry().names():
        pytest.skip("the grammar plugin (json_schema) is not installed")
    response = post(serve_server, "/v1/completions", {"prompt": PROMPT, "samplekit": {
        "chain": [{"json_schema": {"schema_file": "/etc/passwd"}}, "multinomial"]}})
    assert response.status_code == 400 and "cannot name a file" in response.json()["error"]["message"]


def test_the_api_key_guards_every_endpoint_but_health(serve_server):
    assert get(serve_server, "/health", key=None).status_code == 200
    for key in (None, "wrong"):
        for response in (get(serve_server, "/v1/models", key=key), get(serve_server, "/v1/processors", key=key),
                         post(serve_server, "/v1/completions", {"prompt": PROMPT}, key=key)):
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai_client(serve_server, key="nope").models.list()
    models = openai_client(serve_server).models.list()
    assert [m.id for m in models.data] == ["demo"]


def test_unknown_paths_and_models_are_404s_in_openais_shape(serve_server):
    response = get(serve_server, "/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        openai_client(serve_server).completions.create(model="gpt-9", prompt=PROMPT, max_tokens=2)
    assert "gpt-9" in str(caught.value)


def test_limits_bodies_and_prompts(serve_server):
    big = post(serve_server, "/v1/completions", None, raw=b'{"prompt": "' + b"a" * (1 << 20) + b'"}')
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    long_ids = post(serve_server, "/v1/completions", {"prompt": [5] * 70000, "max_tokens": 2})
    assert long_ids.status_code == 413 and long_ids.json()["error"]["param"] == "prompt"
    # Beyond the context window (256): cut from the left, leaving max_tokens of room.
    cut = complete(serve_server, prompt=[5] * 300, max_tokens=16, seed=1)
    assert cut["usage"]["prompt_tokens"] == 240
    full = post(serve_server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 256})
    assert full.status_code == 413 and full.json()["error"]["param"] == "max_tokens"
    form = post(serve_server, "/v1/completions", None, raw=b"prompt=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    broken = post(serve_server, "/v1/completions", None, raw=b'{"prompt": NaN}')
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    rebinding = get(serve_server, "/v1/models", headers={"Host": "evil.example:8000"})
    assert rebinding.status_code == 400 and rebinding.json()["error"]["code"] == "bad_host"


def test_chat_needs_a_chat_template(serve_server):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(serve_server).chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    assert "chat template" in str(caught.value)


def test_processors_lists_what_the_command_lists(serve_server):
    from typer.testing import CliRunner

    from samplekit.cli import app

    listed = CliRunner().invoke(app, ["processors", "--json"])
    assert listed.exit_code == 0
    served = get(serve_server, "/v1/processors").json()
    assert served == json.loads(listed.stdout)
    presets = get(serve_server, "/v1/presets").json()
    assert presets["greedy"] == [{"greedy": {}}]


# -- the scheduler underneath ---------------------------------------------------------------------------

def test_a_client_that_goes_away_frees_its_rows_at_once(serve_server):
    import httpx

    before = serve_server.health()["steps"]
    body = {"prompt": PROMPT, "max_tokens": 250, "n": 16, "ignore_eos": True, "seed": 1, "stream": True}
    with httpx.stream("POST", serve_server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break
        assert serve_server.health()["active_rows"] == 16
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and serve_server.health()["active_rows"]:
        time.sleep(0.05)
    health = serve_server.health()
    assert health["active_rows"] == 0 and health["in_flight"] == 0
    assert health["steps"] - before < 250  # it stopped early: 250 steps would have finished it


def test_a_seeded_request_gives_the_same_text_alone_and_among_15_others(serve_server):
    mine = {"prompt": "JULIET:", "max_tokens": 24, "seed": 1234, "top_p": 0.95}
    alone = complete(serve_server, **mine)["choices"][0]["text"]
    others = [{"prompt": ["ROMEO:", "KING:", "Ham.", "O, "][i % 4] * (1 + i % 3), "max_tokens": 8 + i, "seed": i,
               "temperature": 0.5 + i / 10, "n": 1 + i % 2, "stream": i % 2 == 0} for i in range(15)]

    def send(body):
        if body.get("stream"):
            events = sse(serve_server, body)
            return "".join(c["choices"][0]["text"] for c in events[:-1] if c["choices"])
        return complete(serve_server, **body)["choices"][0]["text"]

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(send, body) for body in others[:8]] + [pool.submit(send, mine)] + \
                  [pool.submit(send, body) for body in others[8:]]
        texts = [f.result() for f in futures]
    assert texts[8] == alone
    assert serve_server.health()["status"] == "ok"


def test_stop_token_ids_and_min_tokens(serve_server):
    body = complete(serve_server, temperature=0, max_tokens=20, stop_token_ids=[10])  # greedy's first token: "\n"
    choice = body["choices"][0]
    assert choice["text"] == "\n" and choice["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 1
    banned = complete(serve_server, temperature=0, max_tokens=3, logit_bias={"10": -100}, samplekit={"trace": 1})
    assert banned["choices"][0]["samplekit_trace"][0]["token"] != 10


def test_a_chain_that_fails_fails_its_own_request_and_the_server_goes_on(serve_server):
    """The scheduler ends only the failing chain's rows (no restart: the failure count stays)."""
    failures = serve_server.health()["failures"]
    response = post(serve_server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "samplekit": {
        "chain": [{"banned_tokens": {"tokens": list(range(4096))}}, "multinomial"]}})
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["code"] == "generation_failed" and "Traceback" not in response.text
    assert serve_server.health()["failures"] == failures
    assert complete(serve_server, max_tokens=3, seed=1)["usage"]["completion_tokens"] >= 1
