"""`samplekit processors`, `samplekit plugins` and `samplekit info`: what is installed, what a
checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from samplekit import plugins as plugin_host
from samplekit.cli import app
from tests.test_cli_generate import write_tiny_checkpoint

runner = CliRunner()
BUILTINS = ("temperature", "top_k", "greedy", "multinomial", "context_window")


@pytest.fixture
def fresh_host():
    """Plugins reloaded for this test (environment and sys.path changes take effect), and again
    afterwards so no other test sees this one's plugins."""
    plugin_host.reset()
    yield
    plugin_host.reset()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


# -- processors -----------------------------------------------------------------------------------
def test_processors_json_lists_the_builtins_with_params_and_distribution():
    result = invoke("processors", "--json")
    assert result.exit_code == 0, result.output
    by_name = {e["name"]: e for e in json.loads(result.stdout)}
    for name in BUILTINS:
        assert by_name[name]["distribution"] == "samplekit-lm", by_name[name]
        assert by_name[name]["version"]
        assert by_name[name]["summary"]
    k = by_name["top_k"]["params"][0]
    assert [p["name"] for p in by_name["top_k"]["params"]] == ["k", "min_tokens_to_keep"]
    assert (k["name"], k["type"], k["default"], k["allowed"]) == ("k", "int", 50, "integer in [1, inf)")
    (t,) = by_name["temperature"]["params"]
    assert (t["name"], t["default"]) == ("value", 1.0) and t["allowed"].startswith("number in [0, inf)")
    assert by_name["temperature"]["stage"] == "logits"
    assert by_name["greedy"]["stage"] == "selector" and by_name["greedy"]["params"] == []
    assert by_name["context_window"]["stage"] == "context"
    assert "argmax" in by_name["greedy"]["aliases"]


def test_processors_lists_the_builtins_first_in_registration_order_then_the_plugins():
    from samplekit.plugins import BUILTIN_PLUGINS

    entries = json.loads(invoke("processors", "--json").stdout)
    builtin = [e["distribution"] == "samplekit-lm" for e in entries]
    assert builtin == sorted(builtin, reverse=True), [e["name"] for e in entries]  # no built-in after a plugin
    ranks = [BUILTIN_PLUGINS.index(e["plugin"]) for e in entries if e["plugin"] in BUILTIN_PLUGINS]
    assert len(ranks) > 10 and ranks == sorted(ranks), [e["plugin"] for e in entries]
    names = [e["name"] for e in entries]
    assert names.index("temperature") < names.index("top_k") < names.index("greedy") < names.index("multinomial")


def test_processors_name_the_primary_parameter_a_bare_value_sets():
    by_name = {e["name"]: e for e in json.loads(invoke("processors", "--json").stdout)}
    assert (by_name["top_p"]["primary"], by_name["typical_p"]["primary"], by_name["top_k"]["primary"]) == \
        ("p", "mass", "k")
    assert by_name["greedy"]["primary"] is None
    table = " ".join(invoke("processors").stdout.replace("│", " ").split())
    assert "p (primary): number in" in table and "value (primary)" not in table  # only where there is a choice


def test_processors_table_shows_every_registered_name_and_stage():
    from samplekit.plugins import get_registry

    result = invoke("processors")
    assert result.exit_code == 0, result.output
    for name in get_registry().names():
        assert name in result.stdout
    for stage in ("logits", "selector", "context"):
        assert stage in result.stdout


# -- plugins --------------------------------------------------------------------------------------
def test_plugins_all_shows_the_builtin_plugins_and_what_they_register(fresh_host):
    result = invoke("plugins", "--all", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for module in plugin_host.BUILTIN_PLUGINS:
        assert rows[module]["builtin"] and rows[module]["distribution"] == "samplekit-lm"
        if ".processors." in module or ".strategies." in module:
            assert rows[module]["hooks"] == (["step_strategy"] if ".strategies." in module else ["register_processors"])
    assert rows["samplekit.processors.selectors"]["processors"][:2] == ["greedy", "multinomial"]
    table = invoke("plugins", "--all")
    assert table.exit_code == 0, table.output
    assert "samplekit.processors.temperature" in table.stdout and "built-in" in table.stdout


def test_plugins_without_all_hides_the_builtins(fresh_host, monkeypatch):
    monkeypatch.setenv(plugin_host.AUTOLOAD_ENV, "1")
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    human = invoke("plugins")
    assert "no plugins installed" in human.stdout
    assert plugin_host.AUTOLOAD_ENV in human.stderr


def _fake_distribution(root: Path, entry_point: str) -> None:
    dist = root / "samplekit_fake_broken-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: samplekit-fake-broken\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(f"[samplekit]\nfakebroken = {entry_point}\n")


def test_a_plugin_that_fails_to_load_is_listed_with_its_error(fresh_host, monkeypatch, tmp_path):
    _fake_distribution(tmp_path, "samplekit_no_such_module_xyz")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r["name"] == "fakebroken"]
    assert (row["distribution"], row["version"]) == ("samplekit-fake-broken", "1.2.3")
    assert "ModuleNotFoundError" in row["error"]
    plugin_host.reset()
    human = invoke("plugins")
    assert "fakebroken" in human.stdout and "failed to load" in human.stdout
    # the load warning is one plain line, not a Python warning report
    assert "warning: samplekit plugin 'fakebroken'" in human.stderr


# -- info -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    ckpt, tok = write_tiny_checkpoint(
        tmp_path_factory.mktemp("info"),
        corpus={"name": "tiny shakespeare", "characters": 1115394, "sha256": "ab" * 32},
        training={"steps": 1200, "optimizer": {"name": "AdamW", "lr": 0.0004}, "losses": list(range(50))},
        evaluation={"perplexity": 7.25},
        tokenizer={"name": "tiny", "file": "tiny.tiktoken"},
        notes="made by a test",
    )
    return ckpt


def test_info_shows_config_size_epoch_losses_tokenizer_and_metadata(annotated):
    result = invoke("info", str(annotated))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for fragment in ("parameters", "vocab_size=263", "context_length=16", "epoch       3",
                     "4.2500", "4.5000", "tiny, file tiny.tiktoken", "corpus:", "name: tiny shakespeare",
                     "training:", "optimizer.name: AdamW", "[50 items", "evaluation:", "perplexity: 7.25",
                     "other metadata: notes"):
        assert fragment in out, out


def test_info_json_carries_every_field(annotated):
    result = invoke("info", str(annotated), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["config"]["vocab_size"] == 263 and data["num_parameters"] > 0
    assert (data["epoch"], data["train_loss"], data["val_loss"]) == (3, 4.25, 4.5)
    assert data["tokenizer"]["file"] == "tiny.tiktoken"
    assert data["metadata"]["training"]["losses"] == list(range(50))
    assert data["metadata"]["notes"] == "made by a test"


def test_info_on_a_missing_checkpoint_exits_2(tmp_path):
    result = invoke("info", str(tmp_path / "nope.pt"))
    assert result.exit_code == 2, result.output
    assert "nope.pt" in result.stderr


def test_info_demo_describes_the_bundled_checkpoint():
    from samplekit.demo import DEMO_CHECKPOINT

    if not Path(DEMO_CHECKPOINT).exists():
        pytest.xfail(f"the demo checkpoint {DEMO_CHECKPOINT} is not built yet")
    result = invoke("info", "demo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["num_parameters"] > 0 and data["config"]["vocab_size"] > 0
