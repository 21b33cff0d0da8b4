"""Constrained generation on the demo model: property tests over generated JSON schemas and
regular expressions, finish reasons, batches whose rows are in different states."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grammar_helpers import run

PROMPTS = ["ROMEO:", "JULIET: O", "First Citizen:\n"]
FAST = settings(max_examples=15, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COMPLETE = ("constraint", "eos")  # the row ended where the constraint allowed it to

# -- generated JSON schemas ---------------------------------------------------------------------------
_names = st.sampled_from(["name", "age", "id", "tags", "ok", "score", "kind", "x"])
_words = st.lists(st.sampled_from(["a", "bb", "Romeo", "yes", "no", "x y"]), min_size=1, max_size=4, unique=True)


@st.composite
def _bounded_integer(draw):
    low = draw(st.integers(-50, 50))
    return {"type": "integer", "minimum": low, "maximum": low + draw(st.integers(0, 200))}


@st.composite
def _bounded_number(draw):
    low = draw(st.integers(-5, 5))
    return {"type": "number", "minimum": low, "maximum": low + draw(st.integers(1, 10))}


_leaves = st.one_of(
    _bounded_integer(),
    _bounded_number(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    _words.map(lambda words: {"enum": words}),
    st.integers(1, 12).map(lambda n: {"type": "string", "maxLength": n}),
    st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
              st.integers(0, 3), st.integers(0, 6)),
)


def _extend(children):
    objects = st.dictionaries(_names, children, min_size=1, max_size=3).flatmap(
        lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
            lambda required: {"type": "object", "properties": props, "required": required,
                              "additionalProperties": False}))
    arrays = st.builds(lambda items, lo, extra: {"type": "array", "items": items, "minItems": lo,
                                                 "maxItems": lo + extra},
                       children, st.integers(0, 2), st.integers(0, 2))
    return objects | arrays


schemas = st.recursive(_leaves, _extend, max_leaves=5)


@FAST
@given(schema=schemas, seed=st.integers(0, 1000), whitespace=st.sampled_from(["standard", "compact", "flexible"]))
def test_every_completed_output_parses_and_validates_against_its_schema(demo, schema, seed, whitespace):
    """Invariant: a row that ends where the constraint allows ("constraint", or end-of-text the
    constraint allowed) is JSON that validates against the schema (checked by jsonschema), and no
    step leaves a row with every token masked."""
    results, spy = run(demo, "json_schema", {"schema": schema, "whitespace": whitespace}, PROMPTS, seed=seed,
                       max_new_tokens=40)
    assert min(spy.fewest) >= 1, f"a row had every token masked: {spy.fewest}"
    for r in results:
        assert r.finish_reason in COMPLETE + ("length",), r.finish_reason
        if r.finish_reason in COMPLETE:
            jsonschema.validate(json.loads(r.text), schema)


# -- generated regular expressions ------------------------------------------------------------------
_atoms = st.sampled_from(["a", "b", "x", "[a-c]", "[0-9]", "[A-Z]", " ", "\\.", ",", "(ab|cd)", "(yes|no)"])


def _regex_extend(inner):
    return st.one_of(
        st.lists(inner, min_size=2, max_size=3).map("".join),
        st.tuples(inner, inner).map(lambda ab: f"({ab[0]}|{ab[1]})"),
        st.builds(lambda r, lo, extra: f"({r}){{{lo},{lo + extra}}}", inner, st.integers(0, 2), st.integers(0, 3)),
        inner.map(lambda r: f"({r})?"),
        inner.map(lambda r: f"({r})+"),
    )


patterns = st.recursive(_atoms, _regex_extend, max_leaves=6)


@FAST
@given(pattern=patterns, seed=st.integers(0, 1000))
def test_every_completed_output_fully_matches_its_pattern(demo, pattern, seed):
    """Invariant: a row that ends where the constraint allows is text the pattern fully matches
    (re.fullmatch), and no step leaves a row with every token masked."""
    results, spy = run(demo, "regex", {"pattern": pattern}, PROMPTS, seed=seed, max_new_tokens=24)
    assert min(spy.fewest) >= 1, f"a row had every token masked: {spy.fewest}"
    for r in results:
        if r.finish_reason in COMPLETE:
            assert re.fullmatch(pattern, r.text), (pattern, r.text)


# -- finish reasons -----------------------------------------------------------------------------------
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def test_a_complete_json_value_ends_the_row_with_reason_constraint(demo):
    results, _ = run(demo, "json_schema", {"schema": PERSON}, PROMPTS, max_new_tokens=64)
    assert [r.finish_reason for r in results] == ["constraint"] * 3
    for r in results:
        jsonschema.validate(json.loads(r.text), PERSON)
        assert r.text.startswith('{"name": "')  # the default whitespace: json.dumps's separators


def test_max_new_tokens_cuts_first_with_reason_length_and_a_prefix(demo):
    results, _ = run(demo, "json_schema", {"schema": PERSON}, PROMPTS, max_new_tokens=3)
    assert [r.finish_reason for r in results] == ["length"] * 3
    for r in results:
        assert '{"name": "'.startswith(r.text[:10]) or r.text.startswith('{"name": "')
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.text)


def test_a_fixed_alternative_ends_with_reason_constraint(demo):
    results, _ = run(demo, "regex", {"pattern": "(yes|no|maybe)"}, PROMPTS)
    assert {r.finish_reason for r in results} == {"constraint"}
    assert all(r.text in ("yes", "no", "maybe") for r in results)


def test_an_open_ended_pattern_lets_the_model_end_it_with_end_of_text(demo):
    """[a-z ]+ is complete after one letter and can always go on: rows end on end-of-text (which
    the processor allows from the first letter on) or at max_new_tokens, never with a mismatch."""
    results, _ = run(demo, "regex", {"pattern": "[a-z ]+"}, PROMPTS * 3, max_new_tokens=30)
    assert {r.finish_reason for r in results} <= {"eos", "length"}
    assert all(re.fullmatch("[a-z ]+", r.text) for r in results)


def test_without_stop_on_eos_the_constraint_ends_the_row(demo):
    model, enc = demo
    results, _ = run(demo, "regex", {"pattern": "(ab|cd)"}, PROMPTS, stop_on_eos=False)
    assert {r.finish_reason for r in results} == {"constraint"}
    assert all(r.text in ("ab", "cd") for r in results)


def test_a_grammar_in_gbnf_and_in_lark_give_sentences_of_the_language(demo):
    gbnf = 'root ::= "(" item ("," item)? ("," item)? ")"\nitem ::= [a-z]{1,4}'
    lark = 'start: "(" ITEM ("," ITEM)? ("," ITEM)? ")"\nITEM: /[a-z]{1,4}/'
    for params in ({"gbnf": gbnf}, {"lark": lark}):
        results, spy = run(demo, "grammar", params, PROMPTS, max_new_tokens=40)
        assert min(spy.fewest) >= 1
        done = [r for r in results if r.finish_reason == "constraint"]
        assert done, [r.finish_reason for r in results]
        for r in done:
            assert re.fullmatch(r"\([a-z]{1,4}(,[a-z]{1,4}){0,2}\)", r.text), r.text


# -- batches ------------------------------------------------------------------------------------------
def test_each_row_of_a_batch_keeps_its_own_state_and_matches_its_run_alone(demo):
    """Rows choose different tokens, so their matchers are in different states; with per-row
    seeds and the batch-invariant forward, each row's output is exactly its output alone."""
    schema = {"type": "array", "items": {"enum": ["Romeo", "Juliet", "Tybalt"]}, "minItems": 1, "maxItems": 4}
    prompts = PROMPTS
    batch, _ = run(demo, "json_schema", {"schema": schema}, prompts, seed=5, batch_invariant=True,
                   max_new_tokens=32)
    assert len({r.text for r in batch}) > 1  # the rows really differ
    for i, prompt in enumerate(prompts):
        alone, _ = run(demo, "json_schema", {"schema": schema}, [prompt], seed=5 + i, batch_invariant=True,
                       max_new_tokens=32)
        assert (alone[0].tokens, alone[0].finish_reason) == (batch[i].tokens, batch[i].finish_reason)
        jsonschema.validate(json.loads(batch[i].text), schema)


# -- the step strategy ----------------------------------------------------------------------------------
def test_the_candidate_strategy_chooses_the_tokens_of_the_dense_path(demo):
    """json_schema -> temperature -> top_k -> multinomial runs on top-k candidates after the mask
    (samplekit's top-k strategy runs the constraint densely first), and gives exactly the dense
    path's tokens."""
    from samplekit import generate
    from samplekit.chain import Chain
    from samplekit.plugins import get_registry

    model, enc = demo
    registry = get_registry()
    schema = {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3}
    specs = [("json_schema", {"schema": schema}), ("temperature", {"value": 0.9}), ("top_k", {"k": 20}),
             ("multinomial", {})]
    fast = Chain([registry.create(n, p) for n, p in specs])
    dense = Chain([registry.create(n, p) for n, p in specs], fast_paths=False)
    strategy = fast.start(1, tokenizer=enc).strategy
    tensors = getattr(strategy, "tensors", strategy)  # samplekit-native's kernel wraps the tensor strategy
    assert strategy.name.startswith("top-k candidates") and [p.name for p, _ in tensors.dense] == ["json_schema"]
    prompts = [enc.encode(p) for p in PROMPTS]
    a = generate(model, prompts, chain=fast, max_new_tokens=40, tokenizer=enc, seed=[1, 2, 3])
    b = generate(model, prompts, chain=dense, max_new_tokens=40, tokenizer=enc, seed=[1, 2, 3])
    assert [(r.tokens, r.finish_reason) for r in a] == [(r.tokens, r.finish_reason) for r in b]
    for r in a:
        if r.finish_reason in COMPLETE:
            jsonschema.validate(json.loads(r.text), schema)
