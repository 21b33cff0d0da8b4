"""Hostile configs, ``--set`` values and parameter values (issue 10, groups 3 and 4): each is
refused with one ConfigError (or ParameterError) naming the file, the key or path, the value (cut
short) and what is allowed; nothing escapes as another exception, nothing hangs or blows up."""

from __future__ import annotations

import json
import math
import os
import time

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplekit import yaml_io
from samplekit.overrides import parse_set
from samplekit.config import MAX_CHAIN, load_config, load_yaml, parse_config
from samplekit.errors import ConfigError, ParameterError
from samplekit.lint import lint_chain
from samplekit.messages import one_line, short_repr
from samplekit.params import INT_LIMIT, Param
from samplekit.plugins import get_registry
from samplekit.safe_io import load_json_file, read_bytes

LAUGHS = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
          + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
                    for i in range(8)))


def config_error(path, text: str, *fragments: str) -> str:
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message
    assert len(message) < 600, message
    return message


# -- 3. YAML and config files -----------------------------------------------------------------------
def test_billion_laughs_is_refused_quickly_and_in_a_short_message(tmp_path):
    start = time.perf_counter()
    config_error(tmp_path / "laughs.yaml", "chain: [greedy]\n" + LAUGHS, "line 6", "aliases expand to more than")
    assert time.perf_counter() - start < 2
    assert len(LAUGHS) < 450


def test_billion_laughs_through_set_is_refused_in_a_short_message():
    value = ("{a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
             "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "
             "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d]}")
    with pytest.raises(ConfigError, match="aliases expand") as info:
        parse_set("stop=" + value)
    assert len(str(info.value)) < 400 and str(info.value).startswith("--set stop")


def test_a_few_aliases_still_work():
    assert yaml_io.loads("a: &x [1, 2]\nb: *x\nbase: &b {k: 1}\nc:\n  <<: *b\n  j: 2\n", "f") == {
        "a": [1, 2], "b": [1, 2], "base": {"k": 1}, "c": {"k": 1, "j": 2}}


def test_a_recursive_alias_is_refused():
    with pytest.raises(ConfigError, match="recursive"):
        yaml_io.loads("a: &a [*a]\n", "f.yaml")


@pytest.mark.parametrize("text, fragments", [
    ("chain: [greedy]\nseed: 2001-02-30\n", ["line 2", "'2001-02-30' is not a valid timestamp", "quote it"]),
    ("chain: [greedy]\nseed: !!float abc\n", ["line 2", "'abc' is not a valid float"]),
    ("chain: [greedy]\nseed: !!int abc\n", ["line 2", "'abc' is not a valid int"]),
    ("chain: [greedy]\nstop_on_eos: !!bool maybe\n", ["line 2", "'maybe' is not a valid bool"]),
    ("chain: [greedy]\nseed: !!timestamp x\n", ["line 2", "'x' is not a valid timestamp"]),
    ("chain: [greedy]\nseed: " + "9" * 5000 + "\n", ["line 2", "is not a valid int"]),
    ("chain: [greedy]\nstop: " + "[" * 500 + "]" * 500 + "\n", ["line 2", "nested more than 64 deep"]),
    ("chain: [greedy]\nseed: !!python/object:os.system ls\n", ["could not determine a constructor"]),
    ("chain: [greedy]\nseed: !!python/object/apply:os.system [ls]\n", ["could not determine a constructor"]),
])
def test_scalars_pyyaml_cannot_build_become_one_config_error_naming_file_and_line(tmp_path, text, fragments):
    config_error(tmp_path / "bad.yaml", text, *fragments)


def test_deep_block_nesting_is_refused(tmp_path):
    text = "chain: [greedy]\nstop:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(300))
    config_error(tmp_path / "deep.yaml", text, "nested more than 64 deep")


@pytest.mark.parametrize("raw, fragment", [
    ("2001-02-30", "not a valid timestamp"), ("!!float abc", "not a valid float"),
    ("!!int abc", "not a valid int"), ("!!bool maybe", "not a valid bool"),
    ("!!timestamp x", "not a valid timestamp"), ("[" * 500 + "]" * 500, "nested more than"),
    ("!!python/object:os.system ls", "could not determine a constructor"),
])
def test_set_values_pyyaml_cannot_build_are_config_errors(raw, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_set("seed=" + raw)
    assert str(info.value).startswith("--set seed: the value")
    assert len(str(info.value)) < 400


def test_duplicate_keys_are_refused_naming_both_lines(tmp_path):
    config_error(tmp_path / "dup.yaml", "seed: 1\nchain: [greedy]\nseed: 2\n",
                 "line 3", "duplicate key 'seed' (first at line 1)")
    config_error(tmp_path / "dup2.yaml", "chain:\n  - top_k: {k: 1, k: 2}\n  - greedy\n",
                 "line 2", "duplicate key 'k'")


def test_non_string_parameter_names_are_a_parameter_error(tmp_path):
    config_error(tmp_path / "bias.yaml", "chain:\n  - logit_bias: {5: 1.0}\n  - greedy\n",
                 "parameter names are strings, not 5", "`logit_bias: {bias: {...}}`")
    message = config_error(tmp_path / "keys.yaml", "chain:\n  - top_k: {1: 2}\n  - greedy\n",
                           "chain[0].top_k", "parameter names are strings, not 1")
    assert "keywords must be strings" not in message
    with pytest.raises(ParameterError, match="parameter names are strings"):
        parse_config({"chain": [{"top_k": {None: 2}}, "greedy"]})


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="FIFO"):
        load_config(str(fifo))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_is_refused_not_read_forever():
    with pytest.raises(ConfigError, match="/dev/zero: the config file is a device"):
        load_config("/dev/zero")


def test_a_directory_and_an_oversized_file_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text("chain: [greedy]\n#" + "x" * (300 * 1024) + "\n")
    with pytest.raises(ConfigError, match="the limit is 262144 bytes"):
        load_config(str(big))


def test_invalid_utf8_is_refused_naming_the_byte(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"chain: [greedy]\nstop: ['\xff']\n")
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(line 2, byte 24"):
        load_config(str(bad))


def test_a_chain_longer_than_the_limit_is_refused_naming_count_and_limit():
    with pytest.raises(ConfigError, match=rf"300 processors; a chain holds at most {MAX_CHAIN}"):
        parse_config({"chain": ["top_k"] * 299 + ["greedy"]})


def test_the_linter_is_linear_in_the_chain_length():
    """8,000 processors (past the config limit: a Python list) lint in well under a second."""
    registry = get_registry()
    names = ["top_k", "repetition_penalty", "top_p", "temperature", "min_p", "frequency_penalty"]
    processors = [registry.create(names[i % 6], {"value": 0.5} if names[i % 6] == "temperature" else {})
                  for i in range(8000)] + [registry.create("multinomial")]
    start = time.perf_counter()
    warnings = lint_chain(processors)
    assert time.perf_counter() - start < 3
    assert len(warnings) < 3 * len(processors)  # at most a few per processor, not one per pair


def test_load_json_file_is_bounded_and_strict(tmp_path):
    good = tmp_path / "config.json"
    good.write_text('{"n_layer": 2, "n_embd": 8}')
    assert load_json_file(good) == {"n_layer": 2, "n_embd": 8}
    cases = {
        "dup.json": ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        "nan.json": ('{"a": NaN}', "NaN is not a JSON number"),
        "deep.json": ("[" * 100000 + "]" * 100000, "nested too deep"),
        "bad.json": ('{"a": }', "invalid JSON at line 1, column 7"),
        "big.json": ('{"a": "' + "x" * 2000 + '"}', "the limit is 1000 bytes"),
        "int.json": ('{"a": ' + "9" * 5000 + "}", "invalid JSON file"),
    }
    for name, (text, fragment) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=fragment):
            load_json_file(tmp_path / name, limit=1000 if name == "big.json" else 1 << 20)
    with pytest.raises(ConfigError, match="no such JSON file"):
        load_json_file(tmp_path / "missing.json")

    class Bad(Exception):
        pass
    with pytest.raises(Bad, match="is a directory"):
        read_bytes(tmp_path, error=Bad)


# -- messages never carry an unbounded repr -----------------------------------------------------------
def test_short_repr_is_bounded_whatever_the_value():
    nested: list = [1]
    for _ in range(40):
        nested = [nested] * 10  # 10**40 leaves if expanded
    for value in ("x" * 10**6, 10**5000, nested, {i: "y" * 1000 for i in range(1000)}, b"\0" * 10**6):
        start = time.perf_counter()
        text = short_repr(value)
        assert len(text) <= 80 and time.perf_counter() - start < 0.5


def test_one_line_collapses_newlines_and_bounds_the_length():
    assert one_line("a\n  b\tc\r\n") == "a b c"
    assert len(one_line("x" * 10**6)) == 2000


@pytest.mark.parametrize("chain", [["x" * 100000, "greedy"], [{"x" * 100000: 1}, "greedy"], ["top k", "greedy"]])
def test_a_huge_or_impossible_processor_name_prints_a_short_error(chain):
    with pytest.raises(ConfigError, match="unknown processor") as info:
        parse_config({"chain": chain})
    assert len(str(info.value)) < 300


def test_a_huge_value_prints_a_short_error():
    with pytest.raises(ParameterError) as info:
        parse_config({"chain": [{"top_k": {"k": "z" * 10**6}}, "greedy"]})
    assert len(str(info.value)) < 300 and "chain[0].top_k.k" in str(info.value)


# -- 4. values that pass validation and crash later ---------------------------------------------------
@pytest.mark.parametrize("data, fragments", [
    ({"chain": ["greedy"], "seed": 2**64}, ["seed", "18446744073709551616", "2**63", "manual_seed"]),
    ({"chain": ["greedy"], "seed": -1}, ["seed", "-1", "[0, 9223372036854775807]"]),
    ({"chain": ["greedy"], "max_new_tokens": 10**12}, ["max_new_tokens", "[1, 1000000]"]),
    ({"chain": ["greedy"], "stop": [""]}, ["stop", "item 0: it is empty"]),
    ({"chain": ["greedy"], "stop": ["\udcff"]}, ["stop", "lone surrogate"]),
    ({"chain": ["greedy"], "max_time": math.inf}, ["max_time", "finite"]),
    ({"chain": [{"typical_p": {"min_tokens_to_keep": 1e30}}, "multinomial"]},
     ["chain[0].typical_p.min_tokens_to_keep", "2**31 - 1"]),
    ({"chain": [{"logit_bias": {"bias": {5: 1e30}}}, "multinomial"]}, []),  # allowed: float32 holds it
    ({"chain": [{"logit_bias": {"bias": {5: 1e300}}}, "multinomial"]}, ["logit_bias.bias", "key 5", "inf in float32"]),
    ({"chain": [{"logit_bias": {"bias": {10**30: 1}}}, "multinomial"]}, ["logit_bias.bias", "token ids are in [0, 2**31 - 1]"]),
    ({"chain": [{"logit_bias": {"bias": {-5: 1, 3: 1}}}, "multinomial"]}, ["logit_bias.bias", "key -5", "token ids"]),
    ({"chain": [{"logit_bias": {"bias": {-1: 5}}}, "multinomial"]}, ["key -1"]),
    ({"chain": [{"banned_tokens": [-(10**30)]}, "multinomial"]}, ["banned_tokens.tokens", "item 0", "token ids"]),
    ({"chain": [{"banned_tokens": [2**31]}, "multinomial"]}, ["item 0", "token ids"]),
    ({"chain": [{"banned_strings": ["\udcff"]}, "multinomial"]}, ["banned_strings.strings", "lone surrogate"]),
    ({"chain": [{"dry": {"allowed_length": 1e30}}, "multinomial"]}, ["dry.allowed_length", "out of range"]),
    ({"chain": [{"dry": {"penalty_last_n": 2**40}}, "multinomial"]}, ["dry.penalty_last_n"]),
    ({"chain": [{"mirostat": {"tau": 3.5e38}}]}, ["mirostat.tau", "inf in float32"]),
    ({"chain": [{"mirostat": {"tau": 3e38}}]}, ["mirostat.tau", "[0, 1000]"]),
    ({"chain": [{"temperature": 1e-40}, "multinomial"]}, ["temperature.value", "0 (or loses its precision)",
                                                          "1.2e-38 to 3.4e38"]),
    ({"chain": [{"temperature": math.inf}, "multinomial"]}, ["temperature.value", "finite"]),
    ({"chain": [{"repetition_penalty": {"penalty": 1e-300}}, "multinomial"]}, ["repetition_penalty.penalty"]),
    ({"chain": [{"dynamic_temperature": {"temperature": 1e-300}}, "multinomial"]}, ["dynamic_temperature"]),
    ({"chain": [{"dynamic_temperature": {"range": math.inf}}, "multinomial"]}, ["dynamic_temperature.range"]),
    ({"chain": [{"top_k": 10**400}, "multinomial"]}, ["top_k.k", "<int of 401 digits>"]),
    ({"chain": [{"temperature": 10**400}, "multinomial"]}, ["temperature.value", "too large"]),
])
def test_values_that_used_to_crash_later_are_refused_up_front(data, fragments):
    if not fragments:
        parse_config(data)
        return
    with pytest.raises(ParameterError) as info:
        parse_config(data, source="c.yaml")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_the_declared_bounds_show_in_the_listing():
    seed = {p.name: p for p in __import__("samplekit.config").config.RUN_PARAMS}["seed"]
    assert "9223372036854775807" in seed.allowed() and "2**63" in seed.help


# Property: for every parameter of every registered processor, a value either is refused with a
# ParameterError at construction, or the processor runs on a batch and picks valid tokens. The
# values are drawn around the limits every parameter shares. (A divisor near float32's smallest
# normal, temperature 1.2e-38, turns ordinary logits into +inf: the chain then stops with a
# GenerationError, a user error naming the step and the chain, never a crash or a NaN sample.)
EXTREMES = st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**63 - 1, 10**30, 1e-40, 1e-30, 1e-300,
                            1.2e-38, 3.4e38, 3.5e38, 1e300, math.inf, -math.inf, math.nan, 0.5, 1e30, ""])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=EXTREMES)
def test_every_parameter_value_is_refused_or_runs_cleanly(data, value):
    """Invariant: a value validation accepts runs to valid tokens, or stops with a GenerationError."""
    from samplekit.chain import Chain
    from samplekit.errors import GenerationError

    registry = get_registry()
    entry = data.draw(st.sampled_from(sorted(registry, key=lambda e: e.name)))
    params = [p for p in entry.cls.params if p.type in ("int", "float")]
    if not params:
        return
    param = data.draw(st.sampled_from(params))
    try:
        processor = registry.create(entry.name, {param.name: value})
    except ParameterError:
        return
    tail = [] if entry.cls.stage.value == "selector" else [registry.create("multinomial")]
    run = Chain([processor, *tail]).start(2, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[1, 2, 3, 1, 2, 3], [4, 5, 4, 5, 4, 5]])
    scores = torch.randn(2, 50, generator=torch.Generator().manual_seed(1)) * 3
    try:
        tokens = run.select(ids, scores)
    except GenerationError as exc:
        assert "+inf" in str(exc) and abs(value) < 1e-37, str(exc)
        return
    assert tokens.shape == (2,) and int(tokens.min()) >= 0 and int(tokens.max()) < 50


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(), st.text(), st.binary(), st.none(), st.booleans(),
                       st.lists(st.integers(-(2**70), 2**70), max_size=4),
                       st.dictionaries(st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=3)),
                                       st.floats(), max_size=3)))
def test_param_validate_returns_or_raises_parameter_error_only(value):
    """Invariant: Param.validate never raises anything but ParameterError, and its message is short."""
    for kind in ("int", "float", "str", "int_list", "str_list", "token_list", "token_bias"):
        try:
            Param("x", kind, None, "h", nullable=False).validate(value, "where")
        except ParameterError as exc:
            assert len(str(exc)) < 500


def test_ints_without_a_declared_bound_stay_within_int32():
    p = Param("n", "int", 1, "h", low=1)
    assert p.validate(INT_LIMIT, "w") == INT_LIMIT
    with pytest.raises(ParameterError, match=r"2\*\*31 - 1"):
        p.validate(INT_LIMIT + 1, "w")
    wide = Param("s", "int", 0, "h", low=0, high=2**63 - 1)
    assert wide.validate(2**62, "w") == 2**62


def test_a_bias_of_minus_inf_is_still_a_ban_and_plus_inf_is_refused():
    p = Param("bias", "token_bias", {}, "h")
    assert p.validate({3: -math.inf}, "w") == {3: -math.inf}
    with pytest.raises(ParameterError, match="finite number or -inf"):
        p.validate({3: math.inf}, "w")


def test_yaml_safe_dump_of_a_resolved_config_round_trips_through_the_bounded_loader(tmp_path):
    cfg = parse_config({"chain": [{"top_k": 5}, "multinomial"], "stop": ["\n\n"], "seed": 2**63 - 1})
    text = yaml.safe_dump(cfg.resolved())
    assert yaml_io.loads(text, "f") == json.loads(json.dumps(cfg.resolved()))
