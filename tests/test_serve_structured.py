"""Structured outputs and tool calls through ``samplekit serve``, asked by the real clients people
use: the ``openai`` client's ``chat.completions.parse`` with a Pydantic model, ``instructor`` (its
JSON-schema and tools modes) and ``langchain-openai``'s ``with_structured_output`` (function
calling and JSON schema); plus vLLM's ``structured_outputs`` and llama.cpp's ``json_schema`` and
``grammar`` fields over plain HTTP. The model is a tiny random-weight Llama with a chat template
(tests/hf_fixtures.py); the schemas are bounded, so a random model completes them."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from serve_helpers import KEY, needs_serve, openai_client, post

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
MESSAGES = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Who is Romeo?"}]


def _needs(*modules: str) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install 'samplekit-lm[serve-test]'")


@pytest.fixture(scope="module")
def structured_server(tmp_path_factory):
    needs_serve()
    _needs("transformers", "tokenizers", "pydantic")
    from samplekit.plugins import get_registry

    if "json_schema" not in get_registry().names():
        pytest.skip("the grammar plugin (samplekit-grammar) is not installed")
    from hf_fixtures import byte_level_tokenizer, model_folder
    from samplekit.serve.local import LocalServer

    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = TEMPLATE
    folder = model_folder(tmp_path_factory.mktemp("structured"), "llama", tokenizer=tokenizer, context=512)
    with LocalServer("--model", str(folder), "--max-batch", "8", api_key=KEY) as server:
        server.model = folder.name
        yield server


def _person():
    from pydantic import BaseModel, Field

    class Person(BaseModel):
        name: str = Field(max_length=6)
        age: int = Field(ge=0, le=99)

    return Person


def chat(server, **body):
    response = post(server, "/v1/chat/completions", {"model": server.model, "messages": MESSAGES,
                                                      "max_tokens": 120, "seed": 1, **body})
    return response


# -- the clients ------------------------------------------------------------------------------------------------

def test_openai_parse_gives_the_pydantic_object(structured_server):
    Person = _person()
    client = openai_client(structured_server)
    reply = client.chat.completions.parse(model=structured_server.model, messages=MESSAGES, response_format=Person,
                                          max_tokens=120, seed=1)
    person = reply.choices[0].message.parsed
    assert isinstance(person, Person) and 0 <= person.age <= 99 and len(person.name) <= 6


@pytest.mark.parametrize("mode", ["JSON_SCHEMA", "TOOLS"])
def test_instructor_gives_the_pydantic_object(structured_server, mode):
    _needs("instructor")
    import instructor

    Person = _person()
    client = instructor.from_openai(openai_client(structured_server), mode=getattr(instructor.Mode, mode))
    person = client.chat.completions.create(model=structured_server.model, messages=MESSAGES, response_model=Person,
                                            max_tokens=120, seed=1, max_retries=0)
    assert isinstance(person, Person) and 0 <= person.age <= 99


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_langchain_with_structured_output_gives_the_pydantic_object(structured_server, method):
    _needs("langchain_openai")
    from langchain_openai import ChatOpenAI

    Person = _person()
    llm = ChatOpenAI(model=structured_server.model, base_url=structured_server.url + "/v1", api_key=KEY,
                     max_tokens=120, seed=1, max_retries=0, timeout=120)
    person = llm.with_structured_output(Person, method=method).invoke("Who is Romeo?")
    assert isinstance(person, Person) and 0 <= person.age <= 99


# -- the fields over HTTP -----------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                             "maximum": 9}},
          "required": ["ok", "n"], "additionalProperties": False}


@pytest.mark.parametrize("body", [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}},
    {"structured_outputs": {"json": SCHEMA}},
    {"guided_json": SCHEMA},
    {"json_schema": SCHEMA},
    {"response_format": {"type": "json_object", "schema": SCHEMA}},
])
def test_every_json_schema_field_gives_json_that_validates(structured_server, body):
    _needs("jsonschema")
    import jsonschema

    response = chat(structured_server, **body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)
    assert choice["finish_reason"] == "stop"


def test_json_object_text_regex_choice_and_grammar(structured_server):
    obj = chat(structured_server, response_format={"type": "json_object"}, max_tokens=300).json()["choices"][0]
    if obj["finish_reason"] == "stop":  # an unbounded object: a random model may not close it in time
        assert isinstance(json.loads(obj["message"]["content"]), dict)
    plain = chat(structured_server, response_format={"type": "text"}, max_tokens=5)
    assert plain.status_code == 200 and plain.json()["choices"][0]["finish_reason"] == "length"
    regex = chat(structured_server, structured_outputs={"regex": "[0-9]{3}-[a-c]{2}"}).json()["choices"][0]
    assert re.fullmatch("[0-9]{3}-[a-c]{2}", regex["message"]["content"])
    picked = chat(structured_server, structured_outputs={"choice": ["yes (1.)", "no [2]", "maybe*"]}).json()
    assert picked["choices"][0]["message"]["content"] in ("yes (1.)", "no [2]", "maybe*")
    gbnf = chat(structured_server, grammar='root ::= "A" [0-9] [0-9]').json()["choices"][0]
    assert re.fullmatch("A[0-9]{2}", gbnf["message"]["content"])
    lark = chat(structured_server, structured_outputs={"grammar": 'start: "B" /[a-z]{2}/'}).json()["choices"][0]
    assert re.fullmatch("B[a-z]{2}", lark["message"]["content"])
    completion = post(structured_server, "/v1/completions", {"prompt": "x", "max_tokens": 40, "seed": 2,
                                                             "response_format": {"type": "json_schema",
                                                                                 "json_schema": {"schema": SCHEMA}}})
    assert completion.status_code == 200 and set(json.loads(completion.json()["choices"][0]["text"])) == {"ok", "n"}


TOOLS = [{"type": "function", "function": {"name": "get_age", "parameters": {
    "type": "object", "properties": {"years": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["years"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "is_up", "parameters": {
        "type": "object", "properties": {"up": {"type": "boolean"}}, "required": ["up"],
        "additionalProperties": False}}}]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "is_up"}}])
def test_tool_choice_required_or_named_gives_a_tool_call_whose_arguments_validate(structured_server, choice):
    _needs("jsonschema")
    import jsonschema

    response = chat(structured_server, tools=TOOLS, tool_choice=choice)
    assert response.status_code == 200, response.text
    out = response.json()["choices"][0]
    assert out["finish_reason"] == "tool_calls" and out["message"]["content"] is None
    (call,) = out["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    if isinstance(choice, dict):
        assert call["function"]["name"] == "is_up"
    jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
    streamed = openai_client(structured_server).chat.completions.create(
        model=structured_server.model, messages=MESSAGES, tools=TOOLS, tool_choice=choice, max_tokens=120, seed=1,
        stream=True)
    calls = [d.tool_calls[0] for c in streamed for d in [c.choices[0].delta] if c.choices and d.tool_calls]
    assert len(calls) == 1 and calls[0].function.arguments == call["function"]["arguments"]


def test_tool_choice_none_ignores_the_tools_and_auto_is_refused_saying_what_to_send(structured_server):
    plain = chat(structured_server, tools=TOOLS, tool_choice="none", max_tokens=4)
    assert plain.status_code == 200 and plain.json()["choices"][0]["finish_reason"] == "length"
    for body in ({"tools": TOOLS}, {"tools": TOOLS, "tool_choice": "auto"}):
        refused = chat(structured_server, **body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "tool_choice"
        assert '"required"' in refused.json()["error"]["message"]


@pytest.mark.parametrize("body, param, says", [
    ({"response_format": {"type": "yaml"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}}, "response_format",
     "json_schema"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", "exactly one"),
    ({"json_schema": SCHEMA, "grammar": 'root ::= "a"'}, "grammar", "already constrains"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
                                                                                "function": {"name": "g"}}},
     "tool_choice", "not one of the tools"),
    ({"tool_choice": "required"}, "tool_choice", "without tools"),
    ({"json_schema": {"enum": ["x" * 100] * 400}}, "json_schema", "at most 32768"),
    ({"structured_outputs": {"choice": ["a"] * 300}}, "structured_outputs", "at most 256"),
])
def test_a_bad_constraint_is_a_400_naming_the_field(structured_server, body, param, says):
    response = chat(structured_server, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error


def test_a_server_without_the_grammar_plugin_names_it(tmp_path):
    """Without the plugin (registry lacks json_schema), the 400 names samplekit-grammar."""
    from samplekit.serve import structured

    class Empty:
        def get(self, name):
            from samplekit.errors import SampleKitError

            raise SampleKitError(f"unknown processor {name!r}")

    parsed = structured.parse({"response_format": {"type": "json_object"}}, "chat")
    with pytest.raises(Exception) as caught:
        structured.check_plugin(parsed, Empty())
    assert caught.value.status == 400 and caught.value.param == "response_format"
    assert "samplekit-grammar" in caught.value.message
