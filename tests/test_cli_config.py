"""`samplekit config validate|show|presets`: every error names the file, the path, the value and
what is allowed; exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from samplekit.cli import app
from samplekit.config import load_config

runner = CliRunner()
CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_repo_has_presets():
    assert {p.stem for p in CONFIGS} >= {"balanced", "greedy", "creative"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_bundled_config_validates_strictly(path):
    result = invoke("config", "validate", "--strict", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok {path}\n"


BAD = {
    "unknown processor": ("chain:\n  - temperature: 0.8\n  - top_kk: 5\n  - multinomial\n",
                          ["chain[1]", "unknown processor 'top_kk'", "did you mean top_k"]),
    "unknown key": ("chain:\n  - multinomial\nmax_tokens: 5\n",
                    ["unknown key 'max_tokens'", "allowed keys: chain, max_new_tokens"]),
    "unknown parameter": ("chain:\n  - top_k: {kk: 3}\n  - multinomial\n",
                          ["chain[0].top_k.kk", "unknown parameter", "allowed: k"]),
    "wrong type": ("chain:\n  - temperature: 0.8\n  - top_k: {k: lots}\n  - multinomial\n",
                   ["chain[1].top_k.k", "'lots'", "expected integer in [1, inf)"]),
    "bool is not a number": ("chain:\n  - temperature: {value: true}\n  - multinomial\n",
                             ["chain[0].temperature.value", "True", "expected number"]),
    "out of range": ("chain:\n  - temperature: 0.8\n  - top_k: {k: 0}\n  - multinomial\n",
                     ["chain[1].top_k.k", "0 is out of range", "[1, inf)"]),
    "run setting out of range": ("chain:\n  - greedy\nmax_new_tokens: -5\n",
                                 ["max_new_tokens", "-5", "[1, 1000000]"]),
    "selector not last": ("chain:\n  - multinomial\n  - top_k: 5\n",
                          ["exactly one selector and it is last", "chain[0].multinomial"]),
    "two selectors": ("chain:\n  - greedy\n  - multinomial\n", ["exactly one selector"]),
    "no selector": ("chain:\n  - top_k: 5\n", ["no selector", "greedy, multinomial"]),
    "empty chain": ("chain: []\n", ["the chain is empty"]),
    "missing chain": ("max_new_tokens: 5\n", ["missing key 'chain'"]),
    "chain not a list": ("chain: greedy\n", ["chain: expected a list"]),
    "invalid yaml": ("chain:\n  - temperature: 0.8\n  - top_k: [5\n  - multinomial\n",
                     ["invalid YAML at line 5"]),
    "not a mapping": ("just a string\n", ["must be a mapping", "found str"]),
    "entry not a processor": ("chain:\n  - {top_k: 5, temperature: 1}\n  - greedy\n",
                              ["chain[0]", "is not a processor entry"]),
    "bare value for a processor without parameters": ("chain:\n  - top_k: 5\n  - greedy: 0.9\n",
                                                      ["chain[1].greedy", "bare value 0.9", "no parameters"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_invalid_config_exits_2_naming_file_path_value_and_allowed(tmp_path, case):
    text, fragments = BAD[case]
    path = write(tmp_path, text, "bad_config.yaml")
    result = invoke("config", "validate", path)
    assert result.exit_code == 2, result.output
    assert f"error: {path}" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    # generate and config show report the same problem, the same way
    shown = invoke("config", "show", path)
    assert shown.exit_code == 2 and f"error: {path}" in shown.stderr, shown.output


def test_missing_config_file_exits_2_naming_it(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    result = invoke("config", "validate", missing)
    assert result.exit_code == 2, result.output
    assert f"error: {missing}: no such config file" in result.stderr


def test_validate_checks_every_file_and_fails_if_any_is_invalid(tmp_path):
    good = write(tmp_path, "chain:\n  - greedy\n", "good.yaml")
    bad = write(tmp_path, "chain:\n  - greedy\n  - top_k: 3\n", "bad.yaml")
    result = invoke("config", "validate", bad, good)
    assert result.exit_code == 2, result.output
    assert f"ok {good}" in result.stdout and f"ok {bad}" not in result.stdout
    assert "bad.yaml" in result.stderr and "1 invalid" in result.stderr


def test_lint_warnings_are_printed_but_only_strict_fails(tmp_path):
    path = write(tmp_path, "chain:\n  - temperature: 0.7\n  - top_k: 40\n  - greedy\n")
    lenient = invoke("config", "validate", path)
    assert lenient.exit_code == 0, lenient.output
    assert lenient.stdout == f"ok {path} (2 warnings)\n"
    assert f"warning: {path}: chain[0].temperature: has no effect" in lenient.stderr
    assert f"warning: {path}: chain[1].top_k: has no effect" in lenient.stderr
    strict = invoke("config", "validate", "--strict", path)
    assert strict.exit_code == 2, strict.output
    assert f"error: {path}: chain[1].top_k" in strict.stderr and "--strict" in strict.stderr
    assert f"ok {path}" not in strict.stdout


def test_validate_warns_about_top_p_before_temperature(tmp_path):
    path = write(tmp_path, "chain:\n  - top_p: {p: 0.9}\n  - temperature: 0.7\n  - multinomial\n")
    result = invoke("config", "validate", path)
    assert result.exit_code == 0, result.output
    assert f"warning: {path}: chain[0].top_p: top_p runs before temperature" in result.stderr


def test_show_fills_in_every_default(tmp_path):
    path = write(tmp_path, "chain:\n  - temp\n  - top_k\n  - sample\n")
    result = invoke("config", "show", path)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == {
        "chain": [{"temperature": {"value": 1.0}}, {"top_k": {"k": 50, "min_tokens_to_keep": 1}}, {"multinomial": {}}],
        "max_new_tokens": 200, "seed": None, "stop": [], "stop_on_eos": True, "max_time": None,
    }


def test_show_output_loads_back_to_the_same_config(tmp_path):
    shown = invoke("config", "show", "creative", "--set", "top_k.k=7", "--set", 'stop=["\\n\\n"]')  # YAML escapes
    assert shown.exit_code == 0, shown.output
    again = write(tmp_path, shown.stdout)
    assert load_config(again).resolved() == yaml.safe_load(shown.stdout)
    assert yaml.safe_load(shown.stdout)["chain"][1] == {"top_k": {"k": 7, "min_tokens_to_keep": 1}}
    assert yaml.safe_load(shown.stdout)["stop"] == ["\n\n"]


def test_show_without_argument_shows_the_default_chain():
    result = invoke("config", "show")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout)["chain"] == [
        {"temperature": {"value": 0.8}}, {"top_k": {"k": 50, "min_tokens_to_keep": 1}}, {"multinomial": {}}]


@pytest.mark.parametrize("item, fragment", [
    ("top_k", "PROCESSOR.PARAM=VALUE"),
    ("top_k.k=0", "top_k.k: 0 is out of range"),
    ("top_p.p=0.5", "no 'top_p' processor"),
    ("bogus=1", "unknown setting"),
])
def test_show_with_a_bad_set_exits_2(item, fragment):
    result = invoke("config", "show", "balanced", "--set", item)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr, result.stderr


def test_presets_lists_every_bundled_preset():
    result = invoke("config", "presets")
    assert result.exit_code == 0, result.output
    for path in CONFIGS:
        assert path.stem in result.stdout
    assert "temperature(0.8) -> top_k(50) -> multinomial" in result.stdout


def test_config_without_subcommand_shows_help():
    result = runner.invoke(app, ["config"])
    assert "validate" in result.output and "show" in result.output and "presets" in result.output
