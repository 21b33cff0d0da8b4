"""Constraints that cannot work are refused at validation (an empty language, an llguidance
limit); one that hits a limit later ends its row with "constraint_error", never "eos" or "stop"
as if its output parsed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("samplekit_grammar", reason="the samplekit-grammar plugin")
from samplekit import Chain, ParameterError, generate  # noqa: E402
from samplekit.cli import app  # noqa: E402
from tests.helpers_models import TINY_EOT, make_tiny_encoding, make_tiny_model  # noqa: E402

ANY_OF = {"anyOf": [{"type": "object", "properties": {f"k{i}": {"const": i}}, "required": [f"k{i}"]}
                    for i in range(5000)]}
REFUSED = {  # the issue's cases: (processor, parameters, what the error says)
    "empty regex": ("regex", {"pattern": r"[^\s\S]"}, "matches no text at all"),
    "schema that is only itself": ("json_schema", {"schema": {"$ref": "#"}}, "matches no text at all"),
    "Lark rule without a finite derivation": ("grammar", {"lark": 'start: a\na: "x" a'}, "llguidance cannot run"),
    "a million repetitions": ("regex", {"pattern": "a{1000000}"}, "too many expressions"),
    "anyOf of 5,000 objects": ("json_schema", {"schema": ANY_OF}, "max is 2000"),
}
MID_GENERATION_LIMIT = 'start: B a\nB: /[bc]{24}/\na: "x" a'  # past the 16 bytes validation runs


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_constraint_that_cannot_work_is_refused_at_validation(case):
    name, values, fragment = REFUSED[case]
    with pytest.raises(ParameterError) as info:
        Chain.from_names((name, values), "greedy")
    message = str(info.value)
    assert message.startswith(f"{name}.") and fragment in message, message
    assert "\n" not in message and "<state>" not in message


def test_config_validate_refuses_an_empty_language_with_one_error_line(tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text(json.dumps({"chain": [{"regex": {"pattern": r"[^\s\S]"}}, "greedy"]}))
    result = CliRunner().invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "matches no text at all" in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_a_satisfiable_constraint_passes_validation():
    for name, values in [("regex", {"pattern": "[a-z]+"}), ("regex", {"pattern": "a{20}"}),
                         ("grammar", {"lark": 'start: "(" start ")" | "x"'}),
                         ("json_schema", {"schema": {"type": "object", "properties": {"a": {"type": "string"}}}})]:
        Chain.from_names((name, values), "greedy")


def test_a_limit_hit_mid_generation_ends_the_row_with_constraint_error_not_eos():
    """The grammar passes validation; after 25 tokens llguidance hits its item limit, its mask then
    allows only end-of-text: the row must not report that as a successful end."""
    chain = Chain.from_names(("grammar", {"lark": MID_GENERATION_LIMIT}), "greedy")
    results = generate(make_tiny_model(context_length=64), [[1, 2, 3], [4, 5]], chain=chain,
                       tokenizer=make_tiny_encoding(), max_new_tokens=40, eos_token_ids=[TINY_EOT])
    assert [r.finish_reason for r in results] == ["constraint_error", "constraint_error"]
    assert all(r.text.endswith("x") and len(r.text) == 25 for r in results), [r.text for r in results]
