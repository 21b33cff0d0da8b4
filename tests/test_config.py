"""samplekit.config through the Python API: every error is a ConfigError (a SampleKitError) naming
the source, the path inside it, the value and what is allowed; overrides re-validate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from samplekit.config import (RUN_KEYS, ChainConfig, default_config, load_config, load_yaml,
                              parse_config, preset_names, preset_path, resolve_config_path)
from samplekit.errors import ConfigError, ParameterError, SampleKitError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def raises(data, *fragments: str, source: str = "my.yaml"):
    with pytest.raises(ConfigError) as info:
        parse_config(data, source=source)
    message = str(info.value)
    assert message.startswith(source), message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_config_errors_are_user_errors_and_value_errors():
    assert issubclass(ConfigError, SampleKitError) and issubclass(ConfigError, ValueError)
    assert issubclass(ParameterError, ConfigError)


def test_unknown_processor_names_the_entry_and_suggests_close_names():
    raises({"chain": [{"temprature": 0.5}, "greedy"]}, "chain[0]", "'temprature'", "did you mean temperature")


def test_unknown_top_level_key_lists_the_allowed_keys():
    raises({"chain": ["greedy"], "max_tokens": 3}, "'max_tokens'", "allowed keys: chain, " + ", ".join(RUN_KEYS))


def test_unknown_parameter_lists_the_processor_parameters():
    err = raises({"chain": [{"top_k": {"n": 3}}, "greedy"]}, "chain[0].top_k.n", "allowed: k")
    assert isinstance(err, ParameterError)


@pytest.mark.parametrize("value", ["five", 2.5, True, None, [3]])
def test_wrong_type_names_the_value_and_the_allowed_type(value):
    raises({"chain": [{"top_k": {"k": value}}, "greedy"]}, "chain[0].top_k.k", repr(value), "integer in [1, inf)")


@pytest.mark.parametrize("value", [0, -1])
def test_out_of_range_names_the_value_and_the_range(value):
    raises({"chain": ["temperature", {"top_k": value}, "multinomial"]},
           "chain[1].top_k.k", f"{value} is out of range", "[1, inf)")


def test_negative_temperature_is_out_of_range_and_zero_is_allowed():
    raises({"chain": [{"temperature": -0.1}, "multinomial"]}, "chain[0].temperature.value", "-0.1", "[0, inf)")
    assert parse_config({"chain": [{"temperature": 0}, "multinomial"]}).resolved()["chain"][0] == {
        "temperature": {"value": 0.0}}


def test_run_settings_are_validated_like_parameters():
    raises({"chain": ["greedy"], "max_new_tokens": 0}, "max_new_tokens", "[1, 1000000]")
    raises({"chain": ["greedy"], "stop": "x"}, "stop", "list of strings")
    raises({"chain": ["greedy"], "seed": -3}, "seed", "-3")
    assert parse_config({"chain": ["greedy"], "seed": None}).run["seed"] is None


def test_selector_must_be_last_and_unique():
    raises({"chain": ["greedy", {"top_k": 3}]}, "exactly one selector and it is last", "chain[0].greedy")
    raises({"chain": ["greedy", "multinomial"]}, "chain[0].greedy, chain[1].multinomial")
    raises({"chain": [{"top_k": 3}]}, "no selector")
    raises({"chain": []}, "empty")


def test_a_config_must_be_a_mapping_with_a_chain_list():
    raises("text", "must be a mapping", "found str")
    raises({"seed": 1}, "missing key 'chain'")
    raises({"chain": {"greedy": None}}, "expected a list")


def test_a_bare_list_is_a_chain():
    assert parse_config(["greedy"]).resolved()["chain"] == [{"greedy": {}}]


@pytest.mark.parametrize("name, primary, value", [
    ("top_p", "p", 0.9), ("min_p", "p", 0.1), ("typical_p", "mass", 0.8), ("epsilon_cutoff", "epsilon", 1e-3),
    ("eta_cutoff", "epsilon", 1e-3), ("top_n_sigma", "n", 1.5), ("repetition_penalty", "penalty", 1.2),
    ("frequency_penalty", "penalty", 0.5), ("presence_penalty", "penalty", 0.5),
    ("dynamic_temperature", "temperature", 0.7), ("min_new_tokens", "n", 4), ("top_k", "k", 5),
    ("temperature", "value", 0.5)])
def test_a_bare_value_sets_the_processors_primary_parameter(name, primary, value):
    bare = parse_config({"chain": [{name: value}, "multinomial"]}).build_chain()
    spelled = parse_config({"chain": [{name: {primary: value}}, "multinomial"]}).build_chain()
    assert bare.processors[0].settings == spelled.processors[0].settings
    assert getattr(bare.processors[0], primary) == value


def test_set_with_a_processor_name_alone_sets_its_primary_parameter():
    cfg = parse_config({"chain": [{"top_p": 0.9}, "multinomial"]})
    cfg.set_value("top_p", 0.5)
    assert cfg.build_chain().processors[0].p == 0.5
    with pytest.raises(ConfigError, match="unknown setting"):
        cfg.set_value("multinomial", 1)  # no parameters, so no primary one


def _registry_with(*classes):
    from samplekit.plugins import PluginHost
    from samplekit.registry import Provider

    registry = PluginHost(autoload=False, blocked=()).build_registry()
    for cls in classes:
        registry.register(cls, Provider("test", "test-dist", "1.0"))
    return registry


def _two_params(primary=None):
    from samplekit import Param, Processor

    class TwoParams(Processor):
        """Two parameters, ``primary`` naming one or none."""

        name = "two_params"
        params = (Param("a", "float", 1.0, "a"), Param("b", "float", 1.0, "b"))

        def process(self, input_ids, scores, ctx):
            return scores

    TwoParams.primary = primary
    return TwoParams


def test_a_bare_value_for_a_processor_without_a_primary_parameter_says_how_to_write_it():
    with pytest.raises(ConfigError) as info:
        parse_config({"chain": [{"two_params": 0.9}, "multinomial"]}, source="my.yaml",
                     registry=_registry_with(_two_params()))
    for fragment in ("my.yaml: chain[0].two_params", "bare value 0.9", "a, b", "{param: value}"):
        assert fragment in str(info.value), str(info.value)


def test_a_primary_that_names_no_declared_parameter_is_refused_at_registration():
    from samplekit.errors import PluginError

    with pytest.raises(PluginError, match="primary parameter 'c'.*its parameters: a, b"):
        _registry_with(_two_params("c"))
    assert parse_config({"chain": [{"two_params": 2.0}, "greedy"]},
                        registry=_registry_with(_two_params("b"))).specs[0].values == {"b": 2.0}


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("chain:\n  - greedy\nseed: [1\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r": invalid YAML at line \d+"):
        load_yaml(path)


def test_missing_file_and_unknown_preset_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"no such config file or preset \(presets: balanced"):
        load_config("nonexistent_preset")


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("chain:\n  - top_k: {k: 0}\n  - greedy\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: chain[0].top_k.k: 0 is out of range")):
        load_config(path)


def test_presets_resolve_by_name_and_all_load():
    assert set(preset_names()) == {p.stem for p in CONFIGS.glob("*.yaml")}
    for name in preset_names():
        assert preset_path(name).name == f"{name}.yaml"
        assert resolve_config_path(name) == preset_path(name)
        assert isinstance(load_config(name), ChainConfig)


def test_default_config_is_temperature_top_k_multinomial_like_balanced():
    assert default_config().resolved() == load_config("balanced").resolved()
    assert default_config().resolved()["chain"] == [
        {"temperature": {"value": 0.8}}, {"top_k": {"k": 50, "min_tokens_to_keep": 1}}, {"multinomial": {}}]


def test_resolved_fills_every_default():
    resolved = parse_config({"chain": ["temp", "top_k", "sample"]}).resolved()
    assert resolved == {"chain": [{"temperature": {"value": 1.0}}, {"top_k": {"k": 50, "min_tokens_to_keep": 1}},
                                  {"multinomial": {}}],
                        "max_new_tokens": 200, "seed": None, "stop": [], "stop_on_eos": True, "max_time": None}


# -- overrides ------------------------------------------------------------------------------------
def test_set_value_changes_a_parameter_or_a_run_setting():
    cfg = default_config()
    cfg.set_value("top_k.k", 7)
    cfg.set_value("temp.value", 0.3)  # an alias finds the same processor
    cfg.set_value("max_new_tokens", 12)
    resolved = cfg.resolved()
    assert resolved["chain"][:2] == [{"temperature": {"value": 0.3}}, {"top_k": {"k": 7, "min_tokens_to_keep": 1}}]
    assert resolved["max_new_tokens"] == 12


def test_set_value_revalidates_and_leaves_the_config_unchanged_on_error():
    cfg = default_config()
    with pytest.raises(ParameterError, match=r"--set .*chain\[1\]\.top_k\.k: 0 is out of range"):
        cfg.set_value("top_k.k", 0)
    with pytest.raises(ParameterError, match="unknown parameter; allowed: k"):
        cfg.set_value("top_k.n", 3)
    with pytest.raises(ConfigError, match="no 'top_p' processor"):
        cfg.set_value("top_p.p", 0.5)
    with pytest.raises(ConfigError, match="unknown setting"):
        cfg.set_value("max_tokens", 5)
    with pytest.raises(ConfigError, match="unknown processor 'nosuch'"):
        cfg.set_value("nosuch.x", 1)
    assert cfg.resolved() == default_config().resolved()


def test_set_or_insert_sets_an_existing_processor():
    cfg = default_config()
    cfg.set_or_insert("temperature", "value", 0.2)
    assert cfg.resolved()["chain"][0] == {"temperature": {"value": 0.2}}
    assert len(cfg.specs) == 3


def test_set_or_insert_puts_a_new_processor_after_the_context_stage_and_after_named_ones():
    cfg = parse_config({"chain": ["context_window", {"top_k": 5}, "multinomial"]})
    cfg.set_or_insert("temperature", "value", 0.5)
    assert [s.name for s in cfg.specs] == ["context_window", "temperature", "top_k", "multinomial"]
    cfg = load_config("greedy")
    cfg.set_or_insert("temperature", "value", 0.5)
    cfg.set_or_insert("top_k", "k", 3, after=("temperature",))
    assert [s.name for s in cfg.specs] == ["temperature", "top_k", "greedy"]


def test_set_or_insert_validates_the_inserted_value():
    cfg = load_config("greedy")
    with pytest.raises(ParameterError, match=r"^--temperature: -1\.0 is out of range"):
        cfg.set_or_insert("temperature", "value", -1.0)
    assert [s.name for s in cfg.specs] == ["greedy"]
