"""The conformance kit on the three processors, with the demo model's tokenizer (4096 tokens):
shapes, dtypes, no NaN, rows independent, state per generation, rows joining and leaving,
is_filter. The kit feeds accept() whatever argmax picks, including tokens the constraint forbids
(a row whose allowed tokens are all -inf in the kit's logits): the processors must not crash."""

from __future__ import annotations

import pytest

from samplekit.testing import check_processor
from samplekit_grammar import Grammar, JsonSchema, Regex

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.mark.parametrize("cls, params", [
    (JsonSchema, {"schema": PERSON}),
    (JsonSchema, {"schema": {"type": "array", "items": {"enum": ["a", "b"]}}, "whitespace": "flexible"}),
    (Regex, {"pattern": r"[a-z]+( [a-z]+)?"}),
    (Grammar, {"lark": 'start: "yes" | "no" | "maybe " NUMBER\nNUMBER: /[0-9]+/'}),
    (Grammar, {"gbnf": 'root ::= "(" [a-c]* ")"'}),
], ids=["json_schema", "json_schema-flexible", "regex", "lark", "gbnf"])
def test_conforms_with_the_demo_tokenizer(cls, params, demo_tokenizer):
    eot = demo_tokenizer.eot_token
    check_processor(cls, params=params, tokenizer=demo_tokenizer, eos_token_ids=(eot,),
                    vocab=demo_tokenizer.n_vocab, examples=12, steps=4)


def test_conforms_without_end_of_text_ids(demo_tokenizer):
    """With no end-of-text ids in the run, the tokenizer's <|endoftext|> is never allowed."""
    check_processor(Regex, params={"pattern": "[0-9]{1,3}"}, tokenizer=demo_tokenizer, eos_token_ids=(),
                    vocab=demo_tokenizer.n_vocab, examples=8, steps=4)


@pytest.mark.parametrize("cls, params, others", [
    (JsonSchema, {"schema": PERSON}, [{"schema": {"type": "array", "items": {"enum": ["a", "b"]}}},
                                      {"schema": {"type": "integer"}, "whitespace": "compact"}]),
    (Regex, {"pattern": r"[a-z]+"}, [{"pattern": "[0-9]{1,3}"}, {"pattern": "(yes|no)"}]),
    (Grammar, {"lark": 'start: "yes" | "no"'}, [{"gbnf": 'root ::= "(" [a-c]* ")"', "lark": None}]),
], ids=["json_schema", "regex", "grammar"])
def test_rows_with_their_own_constraints_share_a_run(cls, params, others, demo_tokenizer):
    """Every parameter is per row: rows whose constraints differ share a run, each row masked by
    its own constraint exactly as when it runs alone (the kit's "rows carry their own values")."""
    check_processor(cls, params=params, tokenizer=demo_tokenizer, eos_token_ids=(demo_tokenizer.eot_token,),
                    vocab=demo_tokenizer.n_vocab, examples=10, steps=4, row_params=others)
