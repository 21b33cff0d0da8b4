"""Every ``>>>`` example in samplekit's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import samplekit

ROOT = Path(samplekit.__file__).parent
MODULES = sorted(
    "samplekit." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for path in ROOT.rglob("*.py")
    if ">>>" in path.read_text(encoding="utf-8") and path.name != "__init__.py"
)


def test_the_examples_are_found():
    assert "samplekit.processors.temperature" in MODULES and len(MODULES) >= 5


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    """Examples marked ``# doctest: +SKIP`` (those that need the network) are not run."""
    failures, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failures == 0
