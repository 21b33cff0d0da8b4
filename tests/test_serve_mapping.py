"""The mapping table (samplekit.serve.mapping): request fields -> chains, in the documented order,
with each field's conventions, the server's defaults from --config, and the refusals."""

from __future__ import annotations

import pytest

from samplekit.config import default_config, load_config, parse_config, preset_names
from samplekit.plugins import get_registry
from samplekit.serve import mapping
from samplekit.serve.errors import APIError


def chain_of(fields, defaults=None):
    values = mapping.validate(fields, vocab_size=4096, context_length=256)
    return [name for name, _ in mapping.entries({**(defaults or {}), **values}, set(values))[0]]


def test_every_field_set_runs_in_the_documented_order():
    fields = {"logit_bias": {"5": -100}, "bad_words": ["Ham"], "min_tokens": 2, "repetition_penalty": 1.1,
              "frequency_penalty": 0.5, "presence_penalty": 0.5, "no_repeat_ngram_size": 3, "dry_multiplier": 0.8,
              "temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "typical_p": 0.95, "top_n_sigma": 2,
              "xtc_probability": 0.5, "mirostat": 2}
    assert chain_of(fields) == ["logit_bias", "banned_strings", "min_new_tokens", "repetition_penalty",
                                "frequency_penalty", "presence_penalty", "no_repeat_ngram", "dry", "temperature",
                                "top_k", "top_p", "min_p", "typical_p", "top_n_sigma", "xtc", "mirostat_v2"]
    assert mapping.ORDER.index("penalties") < mapping.ORDER.index("temperature") < mapping.ORDER.index("top_p")


def test_the_newer_samplers_fields_run_in_their_slots():
    fields = {"logit_bias": {"5": -100}, "sequence_bias": [[[1, 2], -3.0]], "bad_words": ["Ham"],
              "bad_words_ids": [[7, 8], [9]], "repetition_penalty": 1.1, "temperature": 0.7, "smoothing_factor": 0.3,
              "top_h": 0.4, "top_k": 40, "min_p": 0.05, "adaptive_target": 0.5}
    assert chain_of(fields) == ["logit_bias", "sequence_bias", "banned_strings", "banned_sequences",
                                "repetition_penalty", "temperature", "smoothing", "top_h", "top_k", "min_p",
                                "adaptive_p", "multinomial"]
    values = mapping.validate({"smoothing_factor": 0.3, "smoothing_curve": 2.0, "adaptive_target": 0.4,
                               "adaptive_decay": 0.5, "top_h": 0.3, "bad_words_ids": [[7, 8]]},
                              vocab_size=4096, context_length=256)
    chain = dict(mapping.entries(values)[0])
    assert chain["smoothing"] == {"factor": 0.3, "curve": 2.0} and chain["top_h"] == {"top_h": 0.3}
    assert chain["adaptive_p"] == {"target": 0.4, "decay": 0.5}
    assert chain["banned_sequences"] == {"sequences": [[7, 8]]}
    # vLLM's bad_words (text, any tokenization) is unchanged: banned_strings
    assert chain_of({"bad_words": ["Ham"]}) == ["banned_strings", "multinomial"]


def test_repeat_last_n_is_every_penalty_s_window():
    values = mapping.validate({"repeat_last_n": 64, "repeat_penalty": 1.3, "frequency_penalty": 0.5,
                               "presence_penalty": 0.2}, vocab_size=4096, context_length=256)
    chain = mapping.entries(values)[0]
    assert [(name, params.get("last_n")) for name, params in chain[:3]] == \
        [("repetition_penalty", 64), ("frequency_penalty", 64), ("presence_penalty", 64)]
    whole = mapping.entries(mapping.validate({"repeat_penalty": 1.3}, vocab_size=4096, context_length=256))[0]
    assert "last_n" not in whole[0][1]  # -1, the default: the processor's own default, the whole history
    from samplekit.chain import Chain
    Chain.from_names(*chain)  # the processors take it


def test_adaptive_p_and_mirostat_are_refused_together():
    with pytest.raises(APIError) as caught:
        chain_of({"adaptive_target": 0.5, "mirostat": 2})
    assert caught.value.param == "adaptive_target" and "give one" in caught.value.message
    assert chain_of({"adaptive_target": -1, "mirostat": 2}) == ["mirostat_v2"]
    assert chain_of({"adaptive_target": 0.5, "temperature": 0}) == ["greedy"]


@pytest.mark.parametrize("fields", [{}, {"temperature": 1}, {"top_p": 1}, {"top_k": 0}, {"top_k": -1},
                                    {"min_p": 0}, {"typical_p": 1}, {"repetition_penalty": 1},
                                    {"frequency_penalty": 0}, {"top_n_sigma": -1}, {"xtc_probability": 0},
                                    {"dry_multiplier": 0}, {"mirostat": 0}, {"min_tokens": 0},
                                    {"xtc_probability": 0.5, "xtc_threshold": 0.6}, {"repeat_last_n": 0,
                                                                                     "presence_penalty": 1}])
def test_off_values_add_nothing(fields):
    assert chain_of(fields) == ["multinomial"]


def test_temperature_0_is_greedy_and_makes_truncation_moot():
    assert chain_of({"temperature": 0, "top_k": 5, "top_p": 0.5, "repetition_penalty": 1.2}) == \
        ["repetition_penalty", "greedy"]
    assert chain_of({"temperature": 0.5, "dynatemp_range": 0.3}) == ["dynamic_temperature", "multinomial"]


def test_request_fields_override_the_servers_defaults_one_by_one():
    defaults = mapping.defaults_from_config(load_config("balanced"))
    assert defaults == {"temperature": 0.8, "top_k": 50}
    assert chain_of({"top_p": 0.9}, defaults) == ["temperature", "top_k", "top_p", "multinomial"]
    assert chain_of({"top_k": -1}, defaults) == ["temperature", "multinomial"]
    assert chain_of({"temperature": 0}, defaults) == ["greedy"]


def test_llama_cpp_samplers_reorder_the_middle_and_must_name_what_is_set():
    assert chain_of({"temperature": 0.7, "top_k": 40, "min_p": 0.1, "samplers": ["top_k", "min_p", "temperature"]}) \
        == ["top_k", "min_p", "temperature", "multinomial"]
    with pytest.raises(APIError) as caught:
        chain_of({"top_p": 0.5, "samplers": ["top_k", "temperature"]})
    assert caught.value.param == "top_p" and "samplers" in caught.value.message


@pytest.mark.parametrize("fields, param, says", [
    ({"top_p": 0}, "top_p", "(0, 1]"),
    ({"top_k": -2}, "top_k", "[-1, inf)"),
    ({"temperature": 1e-40}, "temperature", "float32"),
    ({"repeat_last_n": -2}, "repeat_last_n", "[-1, inf)"),
    ({"bad_words_ids": [[1, 5000]]}, "bad_words_ids", "[0, 4095]"),
    ({"bad_words_ids": ["Ham"]}, "bad_words_ids", "bad_words"),
    ({"bad_words_ids": [[]]}, "bad_words_ids", "non-empty list of token ids"),
    ({"sequence_bias": [[[1, 2], "x"]]}, "sequence_bias", "finite number"),
    ({"sequence_bias": [[[4096], 1.0]]}, "sequence_bias", "[0, 4095]"),
    ({"top_h": 0}, "top_h", "(0, 1]"),
    ({"smoothing_curve": 0.5}, "smoothing_curve", "[1, 10]"),
    ({"adaptive_decay": 1}, "adaptive_decay", "[0, 0.99]"),
    ({"repetition_penalty": 1.1, "repeat_penalty": 1.2}, "repeat_penalty", "give one"),
    ({"logit_bias": {"x": 1}}, "logit_bias", "not a token id"),
    ({"stop_token_ids": [4096]}, "stop_token_ids", "[0, 4095]"),
    ({"mirostat": 3}, "mirostat", "[0, 2]"),
    ({"dry_base": 1}, "dry_base", "(1, inf)"),
])
def test_refusals_name_the_field_and_what_is_allowed(fields, param, says):
    with pytest.raises(APIError) as caught:
        mapping.validate(fields, vocab_size=4096, context_length=256)
    assert caught.value.status == 400 and caught.value.param == param and says in caught.value.message


def test_a_repeat_window_as_long_as_the_context_is_the_whole_history():
    assert chain_of({"repeat_last_n": 256, "repeat_penalty": 1.3}) == ["repetition_penalty", "multinomial"]


def test_the_newer_samplers_are_possible_server_defaults():
    cfg = parse_config({"chain": [{"sequence_bias": {"bias": [[[1, 2], -2.0]]}},
                                  {"banned_sequences": {"sequences": [[3, 4]]}},
                                  {"repetition_penalty": {"penalty": 1.2, "last_n": 32}},
                                  {"temperature": 0.9}, {"smoothing": {"factor": 0.2}}, {"top_h": {"top_h": 0.5}},
                                  {"adaptive_p": {"target": 0.6, "decay": 0.8}}, "multinomial"]})
    assert mapping.defaults_from_config(cfg) == {
        "sequence_bias": [[[1, 2], -2.0]], "bad_words_ids": [[3, 4]], "repetition_penalty": 1.2,
        "repeat_last_n": 32, "temperature": 0.9, "smoothing_factor": 0.2, "smoothing_curve": 1.0, "top_h": 0.5,
        "adaptive_target": 0.6, "adaptive_decay": 0.8}


def test_every_preset_is_a_possible_server_default_and_other_orders_are_refused():
    from samplekit.errors import ConfigError

    for name in preset_names():
        mapping.defaults_from_config(load_config(name))
    mapping.defaults_from_config(default_config())
    swapped = parse_config({"chain": [{"top_p": {"p": 0.9}}, {"temperature": 0.7}, "multinomial"]})
    with pytest.raises(ConfigError, match="cannot write this chain"):
        mapping.defaults_from_config(swapped)
    foreign = parse_config({"chain": [{"epsilon_cutoff": {"epsilon": 0.001}}, "multinomial"]})
    with pytest.raises(ConfigError, match="epsilon_cutoff"):
        mapping.defaults_from_config(foreign)


def test_equal_requests_share_one_chain_object():
    cache = mapping.ChainCache(get_registry(), size=2)
    a = cache.get([("temperature", {"value": 0.5}), ("multinomial", {})])
    assert cache.get([("temperature", {"value": 0.5}), ("multinomial", {})]) is a
    cache.get([("greedy", {})])
    cache.get([("top_k", {"k": 5}), ("greedy", {})])
    assert cache.get([("temperature", {"value": 0.5}), ("multinomial", {})]) is not a  # evicted (size 2)


def test_the_samplekit_field_is_a_validated_config_and_never_a_path():
    registry = get_registry()
    spec = mapping.parse_samplekit({"chain": [{"top_k": {"k": 3}}, "greedy"], "trace": 4, "seed": 5}, registry)
    assert spec.chain == [("top_k", {"k": 3}), ("greedy", {})] and spec.trace == 4 and spec.run == {"seed": 5}
    assert mapping.parse_samplekit({"preset": "greedy"}, registry).chain == [("greedy", {})]
    for bad in ({"preset": "/etc/passwd"}, {"preset": "configs/balanced.yaml"}, {"chain": "balanced"},
                {"chain": [{"__import__": "os"}, "greedy"]}, {"max_new_tokens": 0}, {"max_time": 1e6}):
        with pytest.raises(APIError) as caught:
            mapping.parse_samplekit(bad, registry)
        assert caught.value.param == "samplekit"


def test_the_readme_table_has_one_row_per_field():
    table = mapping.markdown_table().splitlines()
    assert len(table) == 2 + len(mapping.FIELDS)
    assert all(f"| `{f.name}` |" in "\n".join(table) for f in mapping.FIELDS)
