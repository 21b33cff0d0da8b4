"""``/v1/chat/completions`` with a model that has a chat template: a tiny random Llama saved with
save_pretrained (tests/hf_fixtures.py), served with ``samplekit serve --model FOLDER`` and asked
through the real openai client; its template renders the messages, and a conversation beyond the
context window is a 413, never cut."""

from __future__ import annotations


import pytest

from serve_helpers import llama_server, openai_client, post



@pytest.fixture(scope="module")
def chat_server(tmp_path_factory):
    with llama_server(tmp_path_factory.mktemp("chat"), context=64) as server:
        yield server


def test_chat_renders_the_models_template_and_streams(chat_server):
    client = openai_client(chat_server)
    model = client.models.list().data[0].id
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who is Romeo?"}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=6, seed=3, temperature=0.9,
                                           logprobs=True, top_logprobs=2)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("length", "stop") and reply.usage.completion_tokens <= 6
    # The template's text, tokenized: <|system|>Be brief.\n<|user|>Who is Romeo?\n<|assistant|>
    text = chat_server.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|assistant|>")
    assert reply.usage.prompt_tokens == len(chat_server.tokenizer.encode(text, add_special_tokens=False))
    assert len(choice.logprobs.content) == reply.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in choice.logprobs.content)
    streamed = client.chat.completions.create(model=model, messages=messages, max_tokens=6, seed=3,
                                              temperature=0.9, stream=True)
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content


def test_chat_refusals(chat_server):
    import openai

    client = openai_client(chat_server)
    model = client.models.list().data[0].id
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "hi"}])
    assert "messages[0].role" in str(caught.value)
    long = [{"role": "user", "content": "Once upon a time there was a little model. " * 20}]
    too_long = post(chat_server, "/v1/chat/completions", {"model": model, "messages": long})
    assert too_long.status_code == 413 and too_long.json()["error"]["code"] == "context_length_exceeded"
    images = post(chat_server, "/v1/chat/completions", {"model": model, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    assert images.status_code == 400 and "only text parts" in images.json()["error"]["message"]


def test_developer_renders_as_system_extra_message_keys_are_ignored_and_unknown_roles_refused(chat_server):
    model = "llama"
    as_system = post(chat_server, "/v1/chat/completions", {"model": model, "max_tokens": 2, "seed": 1, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]})
    as_developer = post(chat_server, "/v1/chat/completions", {"model": model, "max_tokens": 2, "seed": 1, "messages": [
        {"role": "developer", "content": "Be brief.", "cache_control": {"type": "ephemeral"}},
        {"role": "user", "content": "Hi", "reasoning_content": None, "refusal": None}]})
    assert as_system.status_code == as_developer.status_code == 200, as_developer.text
    assert as_developer.json()["usage"] == as_system.json()["usage"]
    assert as_developer.json()["choices"][0]["message"] == as_system.json()["choices"][0]["message"]
    legacy = post(chat_server, "/v1/chat/completions", {"model": model, "messages": [
        {"role": "function", "name": "f", "content": "1"}]})
    assert legacy.status_code == 400 and "role tool" in legacy.json()["error"]["message"]
    surrogate = post(chat_server, "/v1/chat/completions", None, raw=(
        '{"model": "llama", "messages": [{"role": "user", "content": "\\ud800"}]}').encode())
    assert surrogate.status_code == 400 and "surrogate" in surrogate.json()["error"]["message"]
