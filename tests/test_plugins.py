"""Plugin discovery through the ``samplekit`` entry point group: fake distributions on sys.path,
load failures, duplicates, the environment switches, and the plugins shipped in plugins/."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from importlib import metadata
from pathlib import Path

import pytest

from samplekit import PluginError, hookimpl
from samplekit.plugins import PluginHost, PluginLoadWarning
from samplekit.testing import check_processor

REPO = Path(__file__).resolve().parents[1]


def plugin_source(*names: str, hook: str = "register_processors") -> str:
    """A plugin module registering one trivial processor per name."""
    classes = "".join(
        textwrap.dedent(f"""
        class P_{n}(Processor):
            '''Returns the scores unchanged.'''
            name = {n!r}
            keeps_argmax = is_filter = vocab_symmetric = True
            def process(self, input_ids, scores, ctx):
                return scores
        """)
        for n in names
    )
    registers = "".join(f"    register(P_{n})\n" for n in names)
    return f"from samplekit import Processor, hookimpl\n{classes}\n@hookimpl\ndef {hook}(register):\n{registers}"


def test_a_distribution_on_sys_path_is_found_with_its_name_and_version(fake_distribution):
    fake_distribution("samplekit-fake", "1.2.3", {"fake": "skt_fake"}, {"skt_fake": plugin_source("fake_proc")})
    host = PluginHost(autoload=True, blocked=())
    entry = host.build_registry().get("fake_proc")
    assert (entry.provider.plugin, entry.provider.distribution, entry.provider.version) == (
        "fake", "samplekit-fake", "1.2.3")
    info = {i.name: i for i in host.plugin_infos()}["fake"]
    assert info.processors == ["fake_proc"] and info.hooks == ["register_processors"] and info.error is None


def test_a_plugin_that_fails_to_import_warns_naming_it_and_the_rest_still_works(fake_distribution):
    fake_distribution("samplekit-broken", "0.0.1", {"broken": "skt_broken"},
                      {"skt_broken": "raise ImportError('no torch here')\n"})
    fake_distribution("samplekit-good", "2.0", {"good": "skt_good"}, {"skt_good": plugin_source("good_proc")})
    with pytest.warns(PluginLoadWarning, match=r"'broken' from samplekit-broken 0.0.1 \(skt_broken\).*no torch here"):
        host = PluginHost(autoload=True, blocked=())
    registry = host.build_registry()
    assert "good_proc" in registry.names() and "top_k" in registry.names()
    assert {i.name: i for i in host.plugin_infos()}["broken"].error == \
        "failed to load and is skipped: ImportError: no torch here"


def test_a_name_two_plugins_register_is_withdrawn_from_both_and_only_that_name(fake_distribution):
    fake_distribution("samplekit-one", "1.0", {"one": "skt_one"}, {"skt_one": plugin_source("shared_name", "only_one")})
    fake_distribution("samplekit-two", "2.0", {"two": "skt_two"}, {"skt_two": plugin_source("shared_name")})
    host = PluginHost(autoload=True, blocked=())
    with pytest.warns(PluginLoadWarning, match="'shared_name' is registered twice"):
        registry = host.build_registry()
    with pytest.raises(PluginError, match="'shared_name' is registered twice") as caught:
        registry.get("shared_name")
    assert "samplekit-one 1.0" in str(caught.value) and "samplekit-two 2.0" in str(caught.value)
    assert "only_one" in registry.names() and "top_k" in registry.names()  # the rest works
    infos = {i.name: i for i in host.plugin_infos()}
    assert "registered twice" in infos["one"].error and "registered twice" in infos["two"].error


def test_a_plugin_taking_a_builtin_processor_name_blocks_only_that_name(fake_distribution):
    fake_distribution("samplekit-clash", "1.0", {"clash": "skt_clash"}, {"skt_clash": plugin_source("top_k")})
    with pytest.warns(PluginLoadWarning, match="'top_k' is registered twice.*samplekit-lm.*samplekit-clash 1.0"):
        registry = PluginHost(autoload=True, blocked=()).build_registry()
    with pytest.raises(PluginError, match="'top_k' is registered twice.*samplekit-clash 1.0"):
        registry.get("top_k", "configs/x.yaml: chain[1]")
    assert "top_p" in registry.names() and "multinomial" in registry.names()


def test_two_distributions_with_one_entry_point_name_keep_the_first_and_report_the_second(fake_distribution):
    fake_distribution("samplekit-first", "1.0", {"same": "skt_first"}, {"skt_first": plugin_source("first_proc")})
    fake_distribution("samplekit-second", "1.0", {"same": "skt_second"}, {"skt_second": plugin_source("second_proc")})
    with pytest.warns(PluginLoadWarning, match="entry point name 'same' is already used by samplekit-"):
        host = PluginHost(autoload=True, blocked=())
    names = host.build_registry().names()
    assert ("first_proc" in names) != ("second_proc" in names)  # one of them, whichever came first


def test_disable_plugin_autoload_keeps_only_the_builtins(fake_distribution, fresh_plugins, monkeypatch):
    fake_distribution("samplekit-fake", "1.0", {"fake": "skt_fake2"}, {"skt_fake2": plugin_source("fake_proc2")})
    assert "fake_proc2" in fresh_plugins.get_registry().names()
    monkeypatch.setenv(fresh_plugins.AUTOLOAD_ENV, "1")
    fresh_plugins.reset()
    registry = fresh_plugins.get_registry()
    assert all(entry.provider.builtin for entry in registry)
    assert "fake_proc2" not in registry.names() and "top_k" in registry.names()


def test_block_plugins_blocks_a_third_party_plugin_and_a_builtin(fake_distribution, fresh_plugins, monkeypatch):
    fake_distribution("samplekit-fake", "1.0", {"fake": "skt_fake3"}, {"skt_fake3": plugin_source("fake_proc3")})
    monkeypatch.setenv(fresh_plugins.BLOCK_ENV, "fake, samplekit.processors.top_k")
    names = fresh_plugins.get_registry().names()
    assert "fake_proc3" not in names and "top_k" not in names
    assert "temperature" in names


def test_a_misspelt_hook_implementation_is_reported_naming_the_distribution_and_skipped(fake_distribution):
    source = plugin_source("typo_proc", hook="register_processor")
    fake_distribution("samplekit-typo", "1.0", {"typo": "skt_typo"}, {"skt_typo": source})
    with pytest.warns(PluginLoadWarning, match=r"samplekit-typo 1\.0.*register_processor.*hooks: register_processors"):
        host = PluginHost(autoload=True, blocked=())
    assert "unknown hook" in {i.name: i for i in host.plugin_infos()}["typo"].error
    assert "top_k" in host.build_registry().names()


@pytest.fixture
def class_plugin():
    """A class-based fake plugin, registered into a private host for the test."""
    from samplekit import Processor

    class Halve(Processor):
        """Halves the scores."""

        name = "halve"
        keeps_argmax = vocab_symmetric = True

        def process(self, input_ids, scores, ctx):
            return scores / 2

    class FakePlugin:
        @hookimpl
        def register_processors(self, register):
            register(Halve)

    host = PluginHost(autoload=False, blocked=())
    name = host.add(FakePlugin(), name="fake-class-plugin")
    yield host, Halve
    host.pm.unregister(name=name)


def test_a_class_based_plugin_registers_through_the_same_hook(class_plugin):
    import torch

    from samplekit.chain import Chain

    host, halve = class_plugin
    registry = host.build_registry()
    entry = registry.get("halve")
    assert entry.cls is halve and entry.provider.plugin == "fake-class-plugin"
    chain = Chain.from_names("halve", "greedy", registry=registry)
    assert torch.equal(chain.apply(None, torch.tensor([[2.0, 4.0]])), torch.tensor([[1.0, 2.0]]))
    check_processor(halve, examples=10)


def test_reset_rebuilds_the_process_wide_host(fresh_plugins, monkeypatch):
    before = fresh_plugins.default_host()
    assert fresh_plugins.default_host() is before
    monkeypatch.setenv(fresh_plugins.BLOCK_ENV, "samplekit.processors.temperature")
    fresh_plugins.reset()
    assert "temperature" not in fresh_plugins.get_registry().names()
    monkeypatch.delenv(fresh_plugins.BLOCK_ENV)
    fresh_plugins.reset()
    assert fresh_plugins.default_host() is not before
    assert "temperature" in fresh_plugins.get_registry().names()


# -- the plugins shipped in plugins/ -------------------------------------------------------------
SHIPPED = {
    "samplekit_xtc": ("samplekit-xtc", {"xtc": [{}, {"threshold": 0.3, "probability": 1.0}]}),
    "samplekit_mirostat": ("samplekit-mirostat", {"mirostat": [{}], "mirostat_v2": [{}, {"tau": 2.0}]}),
    "samplekit_dry": ("samplekit-dry", {"dry": [{}, {"allowed_length": 1, "sequence_breakers": [0]}]}),
}
CASES = [(module, name, params)
         for module, (_, procs) in SHIPPED.items() for name, ps in procs.items() for params in ps]


@pytest.mark.parametrize("module, name, params", CASES)
def test_shipped_plugin_processor_conforms_and_comes_from_its_distribution(module, name, params):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{SHIPPED[module][0]} is not installed (pip install --no-deps -e plugins/{SHIPPED[module][0]})")
    entry = PluginHost(autoload=True, blocked=()).build_registry().get(name)
    assert entry.cls.__module__ == module
    assert (entry.provider.distribution, entry.provider.version) == (SHIPPED[module][0], "0.1.0")
    check_processor(entry.cls, params=params, examples=25)


def test_the_xtc_wheel_carries_its_entry_point_and_module(tmp_path, monkeypatch):
    """Build plugins/samplekit-xtc into a wheel, install it into a folder, and find the plugin
    there through the package metadata alone."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    source, wheels, target = tmp_path / "source", tmp_path / "wheels", tmp_path / "target"
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    shutil.copytree(REPO / "plugins" / "samplekit-xtc", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=120)
    (wheel,) = wheels.glob("samplekit_xtc-0.1.0-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=120)

    (dist,) = metadata.distributions(path=[str(target)])
    assert (dist.metadata["Name"], dist.version) == ("samplekit-xtc", "0.1.0")
    (ep,) = dist.entry_points.select(group="samplekit")
    assert (ep.name, ep.value) == ("xtc", "samplekit_xtc")

    # Load the module from the installed folder (not the editable checkout) and register it.
    spec = importlib.util.spec_from_file_location("wheel_samplekit_xtc", target / "samplekit_xtc" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    host = PluginHost(autoload=False, blocked=(), plugins=(module,))
    assert host.build_registry().get("xtc").cls is module.XTC

    # And the host's own discovery, seeing only what the wheel installed (the target folder goes
    # on sys.path so the entry point imports even where the plugin is not installed otherwise).
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.setattr("samplekit.plugins.metadata.entry_points",
                        lambda group: metadata.EntryPoints(dist.entry_points).select(group=group))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        found = PluginHost(autoload=True, blocked=()).build_registry().get("xtc")
    assert (found.provider.distribution, found.provider.version) == ("samplekit-xtc", "0.1.0")
    if str(target) in (getattr(sys.modules.get("samplekit_xtc"), "__file__", None) or ""):
        del sys.modules["samplekit_xtc"]  # imported from the temporary folder: forget it


# -- plugins that misbehave: each failure names the plugin, the rest keeps working ----------------------

def test_a_register_hook_that_raises_is_reported_and_the_rest_registers(fake_distribution):
    source = "from samplekit import hookimpl\n@hookimpl\ndef register_processors(register):\n    raise KeyError('oops')\n"
    fake_distribution("samplekit-raises", "3.0", {"raises": "skt_raises"}, {"skt_raises": source})
    host = PluginHost(autoload=True, blocked=())
    with pytest.warns(PluginLoadWarning, match=r"'raises' from samplekit-raises 3.0.*register_processors raised KeyError"):
        registry = host.build_registry()
    assert "top_k" in registry.names()
    assert "KeyError" in {i.name: i for i in host.plugin_infos()}["raises"].error


def test_a_plugin_calling_sys_exit_at_import_is_reported_not_obeyed(fake_distribution):
    fake_distribution("samplekit-exits", "1.0", {"exits": "skt_exits"}, {"skt_exits": "import sys\nsys.exit(3)\n"})
    with pytest.warns(PluginLoadWarning, match=r"samplekit-exits 1.0.*SystemExit"):
        host = PluginHost(autoload=True, blocked=())
    assert "top_k" in host.build_registry().names()


def test_plugins_lists_a_broken_plugin_and_exits_0(fake_distribution, fresh_plugins):
    from typer.testing import CliRunner

    from samplekit.cli import app

    source = "from samplekit import hookimpl\n@hookimpl\ndef register_processors(register):\n    1 / 0\n"
    fake_distribution("samplekit-divides", "1.0", {"divides": "skt_divides"}, {"skt_divides": source})
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert "ZeroDivisionError" in rows["divides"]["error"]


def test_a_plugin_processor_that_raises_while_generating_is_named_not_a_traceback(fake_distribution, fresh_plugins):
    import torch

    from samplekit import ProcessorError
    from samplekit.chain import Chain

    source = plugin_source("explodes").replace("return scores", "raise RuntimeError('kaboom')")
    fake_distribution("samplekit-explodes", "0.3", {"explodes": "skt_explodes"}, {"skt_explodes": source})
    chain = Chain.from_names("explodes", "greedy")
    with pytest.raises(ProcessorError, match=r"step 0: processor 'explodes' \(plugin 'explodes' from samplekit-explodes "
                                             r"0.3\) raised RuntimeError: kaboom"):
        chain.select(None, torch.zeros(1, 4))


def test_debug_hooks_traces_every_hook_call_through_pluggy(fresh_plugins, tmp_path):
    """SAMPLEKIT_DEBUG_HOOKS=1 prints pluggy's trace of the hook calls: the registrations and the
    step strategy asked for when a run starts."""
    env = {**__import__("os").environ, "SAMPLEKIT_DEBUG_HOOKS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "samplekit", "generate", "ROMEO:", "-n", "2", "--seed", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "register_processors" in done.stderr and "step_strategy" in done.stderr
    assert done.stderr.count("finish register_processors") >= 15  # one call per built-in plugin
