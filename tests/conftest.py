"""Shared fixtures. Keep this small; fixtures used by one test file live in that file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The real GPT-2 encoding offline: the tiktoken cache beside the repository (../shared, on the
# development and CI machines), unless TIKTOKEN_CACHE_DIR already names one. The tests that need
# it skip, saying why, where there is none.
_SHARED_CACHE = Path(__file__).resolve().parents[2] / "shared" / "tiktoken-cache"
if not os.environ.get("TIKTOKEN_CACHE_DIR") and _SHARED_CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED_CACHE)


@pytest.fixture
def fresh_plugins(monkeypatch):
    """A clean process-wide plugin host before and after the test (``samplekit.plugins.reset``),
    with the plugin environment switches unset."""
    from samplekit import plugins

    for name in (plugins.AUTOLOAD_ENV, plugins.BLOCK_ENV, plugins.DEBUG_ENV):
        monkeypatch.delenv(name, raising=False)
    plugins.reset()
    yield plugins
    plugins.reset()


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install a fake plugin distribution on ``sys.path``: ``make(name, version, entry_points, modules)``.

    Writes ``<name>-<version>.dist-info`` (METADATA + entry_points.txt, what a real install
    writes) and the given modules (name -> source) into a folder of ``tmp_path`` and prepends it
    to ``sys.path``, so ``importlib.metadata`` and pluggy find it like an installed plugin.
    ``entry_points`` maps entry point names in the ``samplekit`` group to module names. The
    modules are dropped from ``sys.modules`` afterwards.
    """
    made: list[str] = []

    def make(name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
        root = tmp_path / f"site-{name}"
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[samplekit]\n{lines}")
        for module, source in modules.items():
            (root / f"{module}.py").write_text(source)
            made.append(module)
        monkeypatch.syspath_prepend(str(root))
        return root

    yield make
    for module in made:
        sys.modules.pop(module, None)


@pytest.fixture
def one_torch_thread():
    """Run the test with one torch thread, then restore the setting. Batch-1 decoding of tiny
    models is overhead-bound: a second thread only waits at barriers (badly so on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
