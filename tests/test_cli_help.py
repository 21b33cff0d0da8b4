"""The help screens: plain value words (no ``<bool>``/``<str>`` placeholders), option names never
cut, and the defaults a user needs (generate's length) shown."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from samplekit.cli import app

runner = CliRunner()


def command_paths(command, prefix=()):
    yield list(prefix)
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*prefix, name))


PATHS = list(command_paths(get_command(app)))


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "samplekit" for p in PATHS])
def test_help_has_no_type_placeholders_and_no_cut_names_at_80_columns(path):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    placeholders = re.findall(r"<(?:bool|str|int|float|list\[[a-z]+\]|[a-z]+ range)>", result.stdout)
    assert not placeholders, result.stdout
    assert "…" not in result.stdout, result.stdout


def test_generate_help_shows_the_default_length_and_the_alias():
    result = runner.invoke(app, ["generate", "--help"])
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "--max-new-tokens" in text and "[default: (200, or the config's max_new_tokens)]" in text, text


def test_the_hidden_alias_still_works_and_both_names_at_once_is_an_error():
    both = runner.invoke(app, ["generate", "ROMEO:", "--length", "3", "--max-new-tokens", "4"])
    assert both.exit_code == 2 and "--length and --max-new-tokens are the same option" in both.stderr, both.output
    alias = runner.invoke(app, ["generate", "ROMEO:", "--max-new-tokens", "0"])
    assert alias.exit_code == 2 and "max_new_tokens" in alias.stderr, alias.output


def test_run_takes_length_as_an_alias_of_max_new_tokens(tmp_path):
    both = runner.invoke(app, ["run", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.jsonl"),
                               "--max-new-tokens", "3", "--length", "4"])
    assert both.exit_code == 2 and "same option" in both.stderr, both.output
