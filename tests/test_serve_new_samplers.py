"""The newer samplers' request fields through a real server (tests/serve_helpers.py): each becomes
its processor in the table's slot, a window on the penalties is accepted, and a bad sequence is a
400 naming the field."""

from __future__ import annotations

from serve_helpers import openai_client, post, serve_server  # noqa: F401 - the fixture

PROMPT = "ROMEO:"


def test_new_fields_run_their_processors_in_the_tables_order(serve_server):
    client = openai_client(serve_server)
    body = {"repeat_penalty": 1.2, "repeat_last_n": 16, "sequence_bias": [[[1, 2], -2.0]], "bad_words_ids": [[3, 4]],
            "smoothing_factor": 0.3, "top_h": 0.5, "adaptive_target": 0.5, "adaptive_decay": 0.8,
            "samplekit": {"trace": 2}}
    first = client.completions.create(model="demo", prompt=PROMPT, max_tokens=4, seed=5, extra_body=body)
    again = client.completions.create(model="demo", prompt=PROMPT, max_tokens=4, seed=5, extra_body=body)
    names = [s["name"] for s in first.choices[0].model_extra["samplekit_trace"][0]["stages"]]
    wanted = ["sequence_bias", "banned_sequences", "repetition_penalty", "smoothing", "top_h", "adaptive_p"]
    assert [n for n in names if n in wanted] == wanted, names
    assert first.choices[0].text == again.choices[0].text  # seeded: adaptive_p's state starts afresh


def test_a_bad_token_sequence_is_a_400_naming_the_field(serve_server):
    response = post(serve_server, "/v1/completions", {"model": "demo", "prompt": PROMPT, "max_tokens": 2,
                                                      "bad_words_ids": [[1, 10**6]]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "bad_words_ids" and "out of range" in error["message"]
    response = post(serve_server, "/v1/completions", {"model": "demo", "prompt": PROMPT, "max_tokens": 2,
                                                      "repeat_last_n": 7, "frequency_penalty": 0.5})
    assert response.status_code == 200, response.text  # any window now, not only -1 and 0
