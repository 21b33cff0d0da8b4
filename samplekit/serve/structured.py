"""Structured outputs and tool calls -> one constraint processor at the head of the chain.

The fields, each mapped to a processor of the grammar plugin (samplekit-grammar):

    response_format  {"type": "text"}                       nothing
                     {"type": "json_object"}                json_schema {"type": "object"}
                     {"type": "json_schema", "json_schema": {"name", "schema", "strict", "description"}}
    structured_outputs (vLLM)  {"json": schema}, {"regex": pattern}, {"choice": [strings]},
                     {"grammar": Lark or GBNF}, {"json_object": true}; vLLM's older guided_json,
                     guided_regex, guided_choice and guided_grammar fields too
    json_schema (llama.cpp)    a schema;  grammar (llama.cpp)  GBNF
    tools + tool_choice        "required" or a named function: the arguments' JSON (one tool) or
                     {"name", "arguments"} (several); "none" ignores the tools; "auto" is refused

At most one of them may constrain a request. ``Structured.entry`` is the ``(processor, params)``
to put first in the chain; ``Structured.tools`` tells the answer to reply with ``tool_calls``.
The size of every schema, pattern and grammar is bounded (``limits.MAX_CONSTRAINT_BYTES``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from samplekit.errors import SampleKitError
from samplekit.messages import short_repr
from samplekit.serve import limits
from samplekit.serve.errors import bad

FIELDS = ("response_format", "structured_outputs", "guided_json", "guided_regex", "guided_choice",
          "guided_grammar", "json_schema", "grammar", "tools", "tool_choice", "parallel_tool_calls")
PLUGIN = "samplekit-grammar"
INSTALL = "pip install llguidance && pip install samplekit-grammar (plugins/samplekit-grammar)"
_RUST_META = set("\\.+*?()|[]{}^$#&-~")


@dataclass
class Tool:
    """A function the reply calls: its name and whether the output is ``{"name", "arguments"}``
    (several tools) or the arguments alone (one)."""

    names: list[str]
    wrapped: bool


@dataclass
class Structured:
    """The constraint a request asked for (None: none) and, for tools, how to answer."""

    entry: tuple[str, dict] | None = None
    source: str | None = None  # the field that set it
    tools: Tool | None = None
    tool_specs: list[dict] = field(default_factory=list)  # for the chat template


def parse(body: dict, kind: str) -> Structured:
    """The constraint named by ``body``'s structured-output and tool fields (400 naming the field)."""
    found: list[tuple[str, tuple[str, dict]]] = []
    out = Structured()
    if "response_format" in body:
        entry = _response_format(body["response_format"])
        if entry is not None:
            found.append(("response_format", entry))
    if "structured_outputs" in body:
        entry = _vllm(body["structured_outputs"], "structured_outputs")
        if entry is not None:
            found.append(("structured_outputs", entry))
    for old, key in (("guided_json", "json"), ("guided_regex", "regex"), ("guided_choice", "choice"),
                     ("guided_grammar", "grammar")):
        if old in body:
            found.append((old, _vllm({key: body[old]}, old)))
    if "json_schema" in body:
        found.append(("json_schema", _schema_entry(body["json_schema"], "json_schema")))
    if "grammar" in body:
        found.append(("grammar", _grammar_entry(body["grammar"], "grammar", gbnf=True)))
    if "tools" in body or "tool_choice" in body:
        if kind != "chat":
            name = "tools" if "tools" in body else "tool_choice"
            raise bad(name, f"{name}: tools are for /v1/chat/completions")
        tool = _tools(body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls"))
        if tool is not None:
            entry, out.tools, out.tool_specs = tool
            found.append(("tools", entry))
    elif "parallel_tool_calls" in body:
        raise bad("parallel_tool_calls", "parallel_tool_calls: allowed only with tools")
    if len(found) > 1:
        raise bad(found[1][0], f"{found[1][0]}: {found[0][0]} already constrains the output; give one of "
                               f"{', '.join(n for n, _ in found)}")
    if found:
        out.source, out.entry = found[0]
        _bounded(out.source, out.entry[1])
    return out


def check_plugin(structured: Structured, registry) -> None:
    """400 naming the field and the plugin when the constraint's processor is not installed."""
    if structured.entry is None:
        return
    try:
        registry.get(structured.entry[0])
    except SampleKitError:
        raise bad(structured.source, f"{structured.source}: structured output needs the {structured.entry[0]!r} "
                                     f"processor of the {PLUGIN} plugin, which this server does not have "
                                     f"({INSTALL})", code="plugin_missing") from None


# -- the fields ----------------------------------------------------------------------------------------------

def _response_format(value: Any) -> tuple[str, dict] | None:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise bad("response_format", f"response_format: {short_repr(value)} is not allowed; expected "
                                     '{"type": "text"}, {"type": "json_object"} or {"type": "json_schema", '
                                     '"json_schema": {"name", "schema"}}')
    kind = value["type"]
    extra = [k for k in value if k not in ("type", "json_schema", "schema")]
    if extra:
        raise bad("response_format", f"response_format.{short_repr(extra[0])[1:-1]}: unknown key; allowed: type, "
                                     "json_schema, schema (llama.cpp's, with json_object)")
    if kind == "text":
        return None
    if kind == "json_object":  # llama.cpp also takes a schema here
        return _schema_entry(value.get("schema", {"type": "object"}), "response_format")
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise bad("response_format", "response_format.json_schema: expected {name, schema, strict, "
                                         f"description}}, not {short_repr(spec)}")
        unknown = [k for k in spec if k not in ("name", "schema", "strict", "description")]
        if unknown:
            raise bad("response_format", f"response_format.json_schema.{short_repr(unknown[0])[1:-1]}: unknown "
                                         "key; allowed: name, schema, strict, description")
        schema = spec.get("schema", {"type": "object"})
        return _schema_entry(schema, "response_format")
    raise bad("response_format", f"response_format.type: {short_repr(kind)} is not allowed; expected text, "
                                 "json_object or json_schema")


def _vllm(value: Any, name: str) -> tuple[str, dict] | None:
    keys = ("json", "regex", "choice", "grammar", "json_object")
    if not isinstance(value, dict):
        raise bad(name, f"{name}: {short_repr(value)} is not allowed; expected a mapping with one of "
                        + ", ".join(keys))
    ignored = ("whitespace_pattern", "disable_any_whitespace", "disable_fallback", "disable_additional_properties")
    given = {k: v for k, v in value.items() if v is not None and k not in ignored}
    unknown = [k for k in given if k not in keys]
    if unknown:
        raise bad(name, f"{name}.{short_repr(unknown[0])[1:-1]}: not supported; give one of " + ", ".join(keys))
    if len(given) != 1:
        raise bad(name, f"{name}: give exactly one of " + ", ".join(keys))
    (key, v), = given.items()
    where = f"{name}.{key}" if name == "structured_outputs" else name
    if key == "json":
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                raise bad(name, f"{where}: the schema is not valid JSON") from None
        return _schema_entry(v, name, where)
    if key == "json_object":
        if v is not True:
            raise bad(name, f"{where}: expected true")
        return "json_schema", {"schema": {"type": "object"}}
    if key == "regex":
        if not isinstance(v, str) or not v:
            raise bad(name, f"{where}: expected a non-empty regular expression (Rust regex syntax)")
        return "regex", {"pattern": v}
    if key == "choice":
        if not isinstance(v, list) or not v or not all(isinstance(c, str) and c for c in v):
            raise bad(name, f"{where}: expected a non-empty list of non-empty strings")
        if len(v) > limits.MAX_CHOICE_STRINGS:
            raise bad(name, f"{where}: {len(v)} choices; at most {limits.MAX_CHOICE_STRINGS}")
        return "regex", {"pattern": "|".join(_escape(c) for c in v)}
    return _grammar_entry(v, name, where=where)


def _schema_entry(schema: Any, name: str, where: str | None = None) -> tuple[str, dict]:
    where = where or name
    if isinstance(schema, bool):
        schema = {} if schema else schema
    if not isinstance(schema, (dict, bool)):
        raise bad(name, f"{where}: {short_repr(schema)} is not a JSON schema (a mapping)")
    return "json_schema", {"schema": schema}


def _grammar_entry(value: Any, name: str, where: str | None = None, gbnf: bool = False) -> tuple[str, dict]:
    where = where or name
    if not isinstance(value, str) or not value.strip():
        raise bad(name, f"{where}: expected a grammar (GBNF with 'root ::= ...'" +
                        ("" if gbnf else ", or Lark with 'start: ...'") + ")")
    return "grammar", {"gbnf" if gbnf or "::=" in value else "lark": value}


def _escape(text: str) -> str:
    """``text`` as a Rust regular expression that matches it literally."""
    return "".join("\\" + c if c in _RUST_META else c for c in text)


def _bounded(name: str, params: dict) -> None:
    size = len(json.dumps(params, ensure_ascii=False, default=str).encode("utf-8", "replace"))
    if size > limits.MAX_CONSTRAINT_BYTES:
        raise bad(name, f"{name}: the schema, pattern or grammar is {size} bytes; at most "
                        f"{limits.MAX_CONSTRAINT_BYTES}", code="constraint_too_large")


# -- tools ---------------------------------------------------------------------------------------------------

def _tools(tools: Any, choice: Any, parallel: Any):
    """(constraint entry, Tool, specs for the template), or None when the tools are ignored."""
    if tools is None:
        if choice in (None, "none"):
            return None
        raise bad("tool_choice", "tool_choice: given without tools")
    if not isinstance(tools, list) or not tools:
        raise bad("tools", f"tools: {short_repr(tools)} is not allowed; expected a non-empty list of "
                           '{"type": "function", "function": {"name", "parameters"}}')
    if len(tools) > limits.MAX_TOOLS:
        raise bad("tools", f"tools: {len(tools)} tools; at most {limits.MAX_TOOLS}")
    functions: dict[str, Any] = {}
    specs = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad("tools", f"tools[{i}]: {short_repr(tool)} is not allowed; expected "
                               '{"type": "function", "function": {"name", "description", "parameters"}}')
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise bad("tools", f"tools[{i}].function.parameters: {short_repr(params)} is not a JSON schema")
        if fn["name"] in functions:
            raise bad("tools", f"tools[{i}]: a second tool named {fn['name']!r}")
        functions[fn["name"]] = params
        specs.append({"type": "function", "function": fn})
    if parallel not in (None, False, True):
        raise bad("parallel_tool_calls", f"parallel_tool_calls: {short_repr(parallel)} is not a boolean")
    choice = "auto" if choice is None else choice
    if choice == "none":
        return None
    if choice == "auto":
        raise bad("tool_choice", 'tool_choice: "auto" (the default with tools) is not supported: this server '
                                 'cannot let the model decide between text and a call; name the tool ({"type": '
                                 '"function", "function": {"name": ...}}) or pass "required", or "none"',
                  code="unsupported_value")
    if choice == "required":
        names = list(functions)
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in functions:
            raise bad("tool_choice", f"tool_choice: {short_repr(name)} is not one of the tools: "
                                     + ", ".join(functions))
        names = [name]
    else:
        raise bad("tool_choice", f"tool_choice: {short_repr(choice)} is not allowed; expected \"none\", "
                                 '"required" or {"type": "function", "function": {"name": ...}}')
    if len(names) == 1:
        schema = functions[names[0]]
        return ("json_schema", {"schema": schema}), Tool(names, wrapped=False), specs
    schema = {"anyOf": [{"type": "object", "properties": {"name": {"const": n}, "arguments": functions[n]},
                         "required": ["name", "arguments"], "additionalProperties": False} for n in names]}
    return ("json_schema", {"schema": schema}), Tool(names, wrapped=True), specs


def tool_call(tool: Tool, text: str, call_id: str) -> dict | None:
    """The ``tool_calls`` entry for a completed output ``text``, or None when it does not parse."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if tool.wrapped:
        if not isinstance(value, dict) or value.get("name") not in tool.names or "arguments" not in value:
            return None
        name, arguments = value["name"], value["arguments"]
    else:
        name, arguments = tool.names[0], value
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}
