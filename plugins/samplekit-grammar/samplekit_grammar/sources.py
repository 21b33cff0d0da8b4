"""From a processor's parameters to a checked llguidance grammar.

Each function turns what the user wrote (a JSON schema, inline or in a file; a regular expression;
a Lark or GBNF grammar) into llguidance's grammar text and validates it with
``LLMatcher.validate_grammar``, which compiles it without a tokenizer. Every problem is a
``samplekit.ParameterError`` naming the place in the config (``where``), the parameter, and
llguidance's own message, so ``samplekit config validate`` and ``generate`` print one
``error:`` line and exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import llguidance

from samplekit import Param, ParameterError
from samplekit.messages import one_line
from samplekit.safe_io import MiB, loads_json, read_text

SCHEMA_FILE_LIMIT = 4 * MiB  # bytes of a schema file at most
PROBE_STEPS = 16  # bytes of output a constraint is run for at validation (samplekit_grammar.sources.probe)
_JSON = Param("schema", "json", None, "a JSON schema", nullable=True)  # the limits of an inline schema
# llguidance's JSON options for each whitespace style (defaults: a schema's "x-guidance" overrides them).
WHITESPACE = {
    "standard": {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "},  # json.dumps
    "compact": {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"},
    "flexible": {"whitespace_flexible": True},
}
_POSITION = re.compile(r"^at \d+\(\d+\): ")
_SOURCE_LINE = re.compile(r"^\s*(\d+\s*\|.*|\^+\s*)$")  # llguidance's excerpt of the grammar: dropped


def exactly_one(where: str, values: dict[str, Any], first: str, second: str) -> str:
    """The name of the one parameter of ``first``/``second`` that is set; ParameterError naming
    both when neither or both are."""
    given = [name for name in (first, second) if values.get(name) is not None]
    if len(given) != 1:
        what = "both are set" if given else "neither is set"
        raise ParameterError(f"{where}: give exactly one of {first} and {second}; {what}")
    return given[0]


def json_schema_grammar(where: str, schema: Any, schema_file: str | None, whitespace: str = "standard") -> str:
    """The grammar of a JSON schema given inline (``schema``: a mapping, or true/false) or as a
    file (``schema_file``: a relative path is resolved against the current directory), with the
    ``whitespace`` style of ``WHITESPACE`` (the schema's own ``x-guidance`` options win)."""
    name = exactly_one(where, {"schema": schema, "schema_file": schema_file}, "schema", "schema_file")
    label = f"{where}.{name}"
    if name == "schema_file":
        schema, path = read_schema_file(label, schema_file)
        label = f"{label}: {path}"
    if not isinstance(schema, (dict, bool)):
        raise ParameterError(f"{label}: a JSON schema is a mapping (or true/false), not {type(schema).__name__}")
    if schema is False:
        raise ParameterError(f"{label}: invalid JSON schema: Unsatisfiable schema: schema is false "
                             "(no value validates)")
    schema = {} if schema is True else schema  # true: any JSON value
    grammar = llguidance.LLMatcher.grammar_from_json_schema(llguidance_json(schema), defaults=WHITESPACE[whitespace])
    return checked(grammar, label, "invalid JSON schema")


def read_schema_file(where: str, path_text: str) -> tuple[Any, Path]:
    """The JSON value in the file ``path_text`` (regular file, at most SCHEMA_FILE_LIMIT bytes,
    UTF-8, strict JSON), and the file's path."""
    path = Path(path_text).expanduser()
    note = ""
    if not path.is_absolute():
        note = f" (a relative schema_file is resolved against the current directory, {Path.cwd()})"
        path = Path.cwd() / path
    try:
        text = read_text(path, limit=SCHEMA_FILE_LIMIT, what="JSON schema file", error=ParameterError)
        value = loads_json(text, str(path), what="JSON schema file", error=ParameterError)
        return _JSON.validate(value, str(path)), path  # the limits of an inline schema
    except ParameterError as exc:
        raise ParameterError(f"{where}: {exc}{note}") from None


def regex_grammar(where: str, pattern: str) -> str:
    """The grammar of a regular expression the whole output must match (Rust ``regex`` syntax)."""
    grammar = llguidance.LLMatcher.grammar_from_regex(pattern)
    return checked(grammar, f"{where}.pattern", "invalid regular expression", positions=False)


def text_grammar(where: str, lark: str | None, gbnf: str | None) -> str:
    """The grammar of a Lark grammar (llguidance's dialect) or a GBNF one (llama.cpp's)."""
    name = exactly_one(where, {"lark": lark, "gbnf": gbnf}, "lark", "gbnf")
    if name == "lark":
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    else:
        try:
            grammar = llguidance.grammar_from("gbnf", gbnf)
        except Exception as exc:  # noqa: BLE001 - the converter raises bare Exceptions for bad input
            raise ParameterError(f"{where}.gbnf: invalid GBNF grammar: {tidy(str(exc))}") from None
    return checked(grammar, f"{where}.{name}", f"invalid {'Lark' if name == 'lark' else 'GBNF'} grammar")


def checked(grammar: str, where: str, what: str, positions: bool = True) -> str:
    """``grammar`` once llguidance compiled it without a tokenizer; else ParameterError.
    ``positions=False`` drops llguidance's ``at LINE(COLUMN):`` (a place in the grammar it
    generated, not in what the user wrote)."""
    try:
        message = llguidance.LLMatcher.validate_grammar(grammar)
    except Exception as exc:  # noqa: BLE001 - malformed input the validator cannot even read
        message = str(exc) or type(exc).__name__
    if message and not message.startswith("WARNING"):
        message = message if positions else _POSITION.sub("", message)
        raise ParameterError(f"{where}: {what}: {tidy(message)}")
    problem = probe(grammar)
    if problem:
        raise ParameterError(f"{where}: {problem}")
    return grammar


def probe(grammar: str, steps: int = PROBE_STEPS) -> str | None:
    """What makes ``grammar`` unusable, found by running it on a byte-level tokenizer (256 byte
    tokens) for up to ``steps`` bytes, each time taking the lowest byte it allows: its language is
    empty (no first byte and no end), or llguidance hits one of its limits (a lexer or parser
    limit, such as a repetition of a million or an ``anyOf`` of thousands of branches). None when
    no problem shows within ``steps`` bytes (the output may still hit a limit later: the row
    then ends with the finish reason "constraint_error")."""
    matcher = llguidance.LLMatcher(_byte_tokenizer(), grammar, log_level=0)
    for step in range(steps):
        if matcher.is_error() or matcher.is_accepting() or matcher.is_stopped():
            break
        allowed = _first_byte(matcher.compute_bitmask())
        if matcher.is_error():
            break
        if allowed is None:
            return "the constraint matches no text at all (its language is empty)"
        matcher.consume_token(allowed)
    if not matcher.is_error():
        return None
    message = tidy(matcher.get_error().split("\n<state>", 1)[0])
    if message.startswith("NoExtensionBias") or not message:
        return "the constraint matches no text at all (its language is empty)"
    return f"llguidance cannot run this constraint: {message}"


def _first_byte(bitmask) -> int | None:
    """The lowest byte token (0-255) set in a one-row bitmask."""
    data = bytes(bitmask)
    for index, value in enumerate(data[:32]):
        if value:
            return index * 8 + (value & -value).bit_length() - 1
    return None


_BYTES: llguidance.LLTokenizer | None = None


def _byte_tokenizer() -> llguidance.LLTokenizer:
    """256 tokens, one per byte, and an end-of-text token 256 (built once)."""
    global _BYTES
    if _BYTES is None:
        import tiktoken
        from llguidance.tiktoken import lltokenizer_from_encoding

        encoding = tiktoken.Encoding("samplekit-bytes", pat_str=r"[\s\S]",
                                     mergeable_ranks={bytes([b]): b for b in range(256)},
                                     special_tokens={"<|endoftext|>": 256})
        _BYTES = lltokenizer_from_encoding(encoding, eos_token=256)
    return _BYTES


def llguidance_json(value: Any) -> str:
    """``value`` as JSON text for llguidance."""
    import json

    return json.dumps(value, ensure_ascii=False)


def tidy(message: str) -> str:
    """llguidance's message on one line, without its excerpt of the generated grammar."""
    lines = [line for line in message.splitlines() if line.strip() and not _SOURCE_LINE.match(line)]
    return one_line(" ".join(lines), 600)
