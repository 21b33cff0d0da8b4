"""The README stays in step with the code: presets and the two commands."""

from __future__ import annotations

import re
from pathlib import Path

from samplekit.config import preset_names

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def code_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


# The hooks and the processor reference are documented in docs/ (docs/plugins.md, and
# docs/processors.md written from the registry): tests/test_docs.py checks them.


def test_every_preset_is_in_the_readme_table():
    names = preset_names()
    assert {"greedy", "balanced", "creative", "code", "factual"} <= set(names)
    for name in names:
        assert f"| `{name}` |" in README, f"preset {name} is missing from README.md"


def test_readme_opens_with_the_setup_and_test_commands_that_ci_runs():
    """The README's set-up installs what CI installs (one requirements file, every plugin in
    plugins/), with torch pinned once, and CI runs the README's test command."""
    setup, test = (block.strip() for block in code_blocks()[:2])
    assert "-c .ci/constraints.txt" in setup and setup.endswith('samplekit generate "ROMEO:"')
    assert (REPO / ".ci" / "constraints.txt").read_text().count("torch==2.13.0") == 1
    ci = (REPO / ".ci" / "run").read_text()
    assert test in ci, "CI must run the README's test command"
    assert "-r .ci/requirements-dev.txt" in setup and "-r .ci/requirements-dev.txt" in ci
    requirements = (REPO / ".ci" / "requirements-dev.txt").read_text()
    listed = re.findall(r"^-e (plugins/\S+)", requirements, flags=re.M)
    assert sorted(listed) == sorted(f"plugins/{p.name}" for p in (REPO / "plugins").iterdir()
                                    if (p / "pyproject.toml").is_file())
