"""Invalid schemas, patterns and grammars are refused when the processor is built (so by
`samplekit config validate` and `samplekit generate`): ParameterError naming the config file,
the path in the config and llguidance's message; exit 2 from the CLI, one `error:` line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from samplekit import ParameterError
from samplekit.cli import app
from samplekit_grammar import Grammar, JsonSchema, Regex, sources

runner = CliRunner()


def config(tmp_path: Path, entry: dict, name: str = "cfg.yaml", **run) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"chain": [entry, "greedy"], **run}))
    return str(path)


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("entry, message", [
    ({"json_schema": {"schema": {"type": "foo"}}},
     r"chain\[0\]\.json_schema\.schema: invalid JSON schema: Invalid type: foo"),
    ({"json_schema": {"schema": {"type": "string", "pattern": "a(b"}}},
     r"chain\[0\]\.json_schema\.schema: invalid JSON schema: regex parse error: a\(b error: unclosed group"),
    ({"json_schema": {"schema": {"type": "integer", "minimum": 5, "maximum": 1}}},
     r"chain\[0\]\.json_schema\.schema: invalid JSON schema: Unsatisfiable schema: minimum \(5\) is greater "
     r"than maximum"),
    ({"json_schema": {"schema": [1]}}, r"chain\[0\]\.json_schema\.schema: a JSON schema is a mapping"),
    ({"json_schema": {}}, r"chain\[0\]\.json_schema: give exactly one of schema and schema_file; neither is set"),
    ({"json_schema": {"schema": {}, "schema_file": "x.json"}}, r"exactly one of schema and schema_file; both are set"),
    ({"regex": {"pattern": "a(b"}}, r"chain\[0\]\.regex\.pattern: invalid regular expression: invalid regex \"a\(b\""),
    ({"regex": {"pattern": ""}}, r"chain\[0\]\.regex\.pattern: '' is not allowed"),
    ({"grammar": {"lark": "start: x"}},
     r"chain\[0\]\.grammar\.lark: invalid Lark grammar: at 1\(8\): unknown name: \"x\""),
    ({"grammar": {"gbnf": 'root ::= "a" b'}}, r"chain\[0\]\.grammar\.gbnf: invalid GBNF grammar: .*Rule 'b' not found"),
    ({"grammar": {"lark": "start: \"a\"", "gbnf": "root ::= \"a\""}}, r"exactly one of lark and gbnf; both are set"),
    ({"grammar": {}}, r"chain\[0\]\.grammar: give exactly one of lark and gbnf; neither is set"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
def test_config_validate_refuses_with_llguidance_s_message_and_exit_2(tmp_path, entry, message):
    path = config(tmp_path, entry)
    result = invoke("config", "validate", path)
    assert result.exit_code == 2, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("error"))
    assert path in line
    assert re.search(message, line), line


def test_generate_refuses_an_invalid_constraint_with_exit_2(tmp_path):
    result = invoke("generate", "ROMEO:", "--config", config(tmp_path, {"regex": {"pattern": "(unclosed"}}))
    assert result.exit_code == 2
    assert "chain[0].regex.pattern: invalid regular expression" in result.output


# -- schema files ------------------------------------------------------------------------------------------
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def test_a_relative_schema_file_is_read_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "person.json").write_text(json.dumps(PERSON))
    monkeypatch.chdir(tmp_path)
    p = JsonSchema(schema_file="person.json")
    assert p.grammar == JsonSchema(schema=PERSON).grammar
    (tmp_path / "any.json").write_text("true")  # a boolean schema: any JSON value
    assert JsonSchema(schema_file="any.json").grammar


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, r"no such JSON schema file \(a relative schema_file is resolved against the current directory"),
    (lambda d: (d / "s.json").mkdir(), r"is a directory; expected a regular file"),
    (lambda d: (d / "s.json").write_text('{"type": "object",}'), r"invalid JSON at line 1"),
    (lambda d: (d / "s.json").write_bytes(b'{"type": "\xff"}'), r"not valid UTF-8"),
    (lambda d: (d / "s.json").write_text('{"a": 1, "a": 2}'), r"duplicate key 'a'"),
    (lambda d: (d / "s.json").write_text(" " * 200 + "{}"), r"the limit is 100 bytes"),
    (lambda d: (d / "s.json").write_text('{"type": "integer", "minimum": 5, "maximum": 1}'), r"invalid JSON schema"),
    (lambda d: (d / "s.json").write_text("false"), r"invalid JSON schema: Unsatisfiable schema: schema is false"),
    (lambda d: (d / "s.json").write_text('"string"'), r"a JSON schema is a mapping \(or true/false\), not str"),
])
def test_a_bad_schema_file_is_refused_naming_the_file(tmp_path, monkeypatch, setup, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "SCHEMA_FILE_LIMIT", 100)
    setup(tmp_path)
    with pytest.raises(ParameterError, match=message) as caught:
        JsonSchema(schema_file="s.json", _where="cfg.yaml: chain[0].json_schema")
    assert str(caught.value).startswith(f"cfg.yaml: chain[0].json_schema.schema_file: {tmp_path / 's.json'}")


def test_parameters_come_from_plain_dicts_and_show_in_config_show(tmp_path):
    path = config(tmp_path, {"json_schema": {"schema": PERSON, "whitespace": "compact"}})
    result = invoke("config", "show", path)
    assert result.exit_code == 0, result.output
    assert "json_schema" in result.output and "compact" in result.output
    made_from = ((JsonSchema, {"schema": PERSON}), (Regex, {"pattern": "a+"}), (Grammar, {"lark": 'start: "a"'}))
    for cls, params in made_from:
        made = cls(**params)
        assert cls(**made.settings).grammar == made.grammar


# -- the command line, end to end --------------------------------------------------------------------------
def test_samplekit_generate_prints_json_that_validates(tmp_path):
    path = config(tmp_path, {"json_schema": {"schema": PERSON}}, max_new_tokens=60, seed=3)
    result = invoke("generate", "ROMEO:", "--config", path, "--json", "-N", "2")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["finish_reason"] for r in rows] == ["constraint", "constraint"]
    for r in rows:
        jsonschema.validate(json.loads(r["text"]), PERSON)
    printed = invoke("generate", "ROMEO:", "--config", path)
    assert printed.exit_code == 0
    jsonschema.validate(json.loads(printed.stdout.strip()[len("ROMEO:"):]), PERSON)


def test_the_linter_flags_a_constraint_after_a_truncation_filter_and_nothing_when_it_comes_first():
    from samplekit.config import parse_config
    from samplekit.lint import lint_chain

    late = lint_chain(parse_config({"chain": [{"top_k": 5}, {"regex": {"pattern": "a+"}}, "multinomial"]}))
    assert [w.where for w in late] == ["chain[1].regex"]
    assert "move regex before top_k" in late[0].suggestion
    first = parse_config({"chain": [{"json_schema": {"schema": PERSON}}, {"repetition_penalty": {"penalty": 1.1}},
                                    {"temperature": 0.8}, {"top_k": 40}, {"top_p": {"p": 0.9}}, "multinomial"]})
    assert lint_chain(first) == []
