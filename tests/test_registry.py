"""The processor registry: registration through the callback, names and aliases, duplicates,
bad classes, unknown names and parameter validation on creation."""

from __future__ import annotations

import pytest

from samplekit import ConfigError, Param, ParameterError, PluginError, Processor, Selector, hookimpl
from samplekit.plugins import PluginHost
from samplekit.registry import Provider, Registry

ONE = Provider("one", "samplekit-one", "1.0")
TWO = Provider("two", "samplekit-two", "2.0")


class Scale(Processor):
    """Multiplies the scores by a factor."""

    name = "scale"
    aliases = ("mul",)
    params = (Param("factor", "float", 1.0, "the factor", low=0.0, low_open=True),)

    def process(self, input_ids, scores, ctx):
        return scores * self.factor


def test_a_registered_processor_is_found_by_name_and_by_alias():
    registry = Registry()
    registry.register(Scale, ONE)
    assert registry.get("scale").cls is Scale and registry.get("mul").cls is Scale
    assert registry.names() == ["scale"] and len(registry) == 1


def test_an_alias_taken_by_another_plugin_is_an_error_naming_both_distributions():
    class Other(Scale):
        """Another."""

        name = "other"
        aliases = ("mul",)

    registry = Registry()
    registry.register(Scale, ONE)
    with pytest.raises(PluginError, match=r"'mul' is registered twice: by plugin 'one' from samplekit-one 1.0 "
                                          r"and by plugin 'two' from samplekit-two 2.0"):
        registry.register(Other, TWO)
    assert registry.names() == ["scale"]  # nothing half-registered


def test_an_unknown_name_is_a_config_error_suggesting_close_names():
    registry = Registry()
    registry.register(Scale, ONE)
    with pytest.raises(ConfigError, match="unknown processor 'scal'; did you mean scale"):
        registry.get("scal")


def test_create_validates_parameters_and_names_where_they_came_from():
    registry = Registry()
    registry.register(Scale, ONE)
    made = registry.create("mul", {"factor": 2})
    assert made.factor == 2.0 and made.provider == ONE
    with pytest.raises(ParameterError, match=r"chain\[0\]\.scale\.factor: 0 is out of range; expected number in \(0"):
        registry.create("scale", {"factor": 0}, where="chain[0]")
    with pytest.raises(ParameterError, match="scale.speed: unknown parameter; allowed: factor"):
        registry.create("scale", {"speed": 1})


@pytest.mark.parametrize("bad, problem", [
    (object, "not a samplekit.Processor subclass"),
    (type("NoName", (Processor,), {"name": "not an identifier", "process": lambda *a: None}), "must be an identifier"),
    (type("NoProcess", (Processor,), {"name": "no_process"}), "does not implement process()"),
    (type("NoSelect", (Selector,), {"name": "no_select"}), "does not implement select()"),
])
def test_a_bad_processor_class_is_rejected_naming_the_plugin(bad, problem):
    with pytest.raises(PluginError, match=r"plugin 'one' from samplekit-one 1.0.*") as caught:
        Registry().register(bad, ONE)
    assert problem in str(caught.value)


def test_describe_lists_stage_params_traits_and_provider():
    registry = Registry()
    registry.register(Scale, ONE)
    described = registry.get("scale").describe()
    assert described["stage"] == "logits" and described["aliases"] == ["mul"]
    assert described["summary"] == "Multiplies the scores by a factor."
    assert described["params"][0]["allowed"] == "number in (0, inf)"
    assert (described["distribution"], described["version"], described["builtin"]) == ("samplekit-one", "1.0", False)
    assert set(described["traits"]) == {"keeps_argmax", "is_filter", "vocab_symmetric", "needs_history",
                                        "stateful", "random"}


def test_builtins_register_through_the_same_hook_and_are_marked_builtin():
    registry = PluginHost(autoload=False, blocked=()).build_registry()
    for name in ("temperature", "top_k", "greedy", "multinomial", "context_window"):
        provider = registry.get(name).provider
        assert provider.builtin and provider.distribution == "samplekit-lm"
        assert provider.plugin.startswith("samplekit.processors.")


def test_each_plugin_is_told_only_about_its_own_registrations():
    class Plugin:
        @hookimpl
        def register_processors(self, register):
            register(Scale)

    host = PluginHost(autoload=False, blocked=(), plugins=(Plugin(),))
    host.add(type("Empty", (), {})(), name="empty")
    host.build_registry()
    infos = {i.name: i for i in host.plugin_infos()}
    assert infos["empty"].processors == [] and infos["empty"].hooks == []
    assert [i.processors for i in infos.values() if i.name not in ("empty",)] == [["scale"]]
