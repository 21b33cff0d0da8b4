"""Plugins import only samplekit's public contract (samplekit.contract), and no samplekit module
imports another's private names.

Read from the source (ast), every import anywhere in a file (functions too):

- a plugin's package (``plugins/*/<package>/``, not its tests) imports only the modules in
  ``samplekit.contract.PUBLIC_MODULES``, and from them only public names (their ``__all__``, or
  names not starting with ``_``);
- a samplekit module imports no name starting with ``_`` from another module, nor reads one as
  ``module._name`` through a module it imported: a helper two modules share is public.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from samplekit.contract import PUBLIC_MODULES, is_public

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "samplekit"
PLUGIN_SOURCES = sorted(p for p in (ROOT / "plugins").glob("*/samplekit_*/**/*.py"))


def samplekit_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` for each samplekit import in ``path``; ``name`` is None for
    ``import module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "samplekit"]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "samplekit":
            found += [(node.lineno, node.module, a.name) for a in node.names]
    return found


def public_names(module: str) -> set[str] | None:
    """The module's ``__all__``, None when it declares none."""
    declared = getattr(importlib.import_module(module), "__all__", None)
    return set(declared) if declared is not None else None


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def contract_breaches(path: Path) -> list[str]:
    breaches = []
    for line, module, name in samplekit_imports(path):
        where = f"{shown(path)}:{line}"
        if name is not None and is_public(f"{module}.{name}"):
            continue  # from samplekit import bench: the public module itself
        if not is_public(module):
            breaches.append(f"{where} imports {module}, which is not public (samplekit.contract.PUBLIC_MODULES)")
            continue
        names = public_names(module)
        if name is not None and (name.startswith("_") or (names is not None and name not in names)):
            breaches.append(f"{where} imports {name} from {module}, which does not export it")
    return breaches


def test_the_contract_lists_modules_that_exist_and_say_what_they_offer():
    for module, purpose in PUBLIC_MODULES.items():
        importlib.import_module(module)
        assert purpose.strip(), module


def test_the_contract_check_sees_a_private_module_and_a_private_name(tmp_path):
    source = tmp_path / "plugin.py"
    source.write_text("from samplekit.processors.temperature import Temperature\n"
                      "def f():\n    from samplekit.strategy import _owner\n"
                      "from samplekit import Processor, hookimpl\nimport samplekit.engine\n")
    breaches = "\n".join(contract_breaches(source))
    assert breaches.count("\n") == 2, breaches
    for expected in ("samplekit.processors.temperature", "_owner from samplekit.strategy", "samplekit.engine"):
        assert expected in breaches


def test_plugins_exist_to_be_checked():
    assert {p.parts[-3] for p in PLUGIN_SOURCES} >= {"samplekit-native", "samplekit-grammar", "samplekit-dry"}


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(ROOT / "plugins")))
def test_a_plugin_imports_only_samplekits_public_contract(path):
    assert contract_breaches(path) == []


def test_no_plugin_imports_samplekits_builtin_processors():
    """A plugin recognises what it can serve by declared traits or hooks, never by the class of a
    built-in processor."""
    used = [(p, m) for p in PLUGIN_SOURCES for _, m, _ in samplekit_imports(p) if m.startswith("samplekit.processors")]
    assert used == []


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def private_uses(path: Path, modules: set[str], name: str | None = None) -> list[str]:
    """Private names ``path`` (module ``name``) takes from other samplekit modules: ``from m
    import _x`` and ``m._x`` through a name bound to an imported samplekit module."""
    name = name or module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("samplekit"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in modules:
                    aliases[a.asname or a.name] = full
                elif a.name.startswith("_") and not a.name.startswith("__") and node.module != name:
                    found.append(f"{shown(path)}:{node.lineno} imports {a.name} from {node.module}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in modules and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != name:
            found.append(f"{shown(path)}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return found


def test_the_private_name_check_sees_both_forms(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from samplekit.engine import _prepare\nfrom samplekit import engine\nengine._vocab_size(1)\n"
                     "from samplekit import __version__\n")
    found = private_uses(probe, {"samplekit.engine"}, "samplekit.probe")
    assert len(found) == 2 and "_prepare" in found[0] and "samplekit.engine._vocab_size" in found[1]


def test_no_samplekit_module_imports_another_modules_private_names():
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    found = [use for p in paths for use in private_uses(p, modules)]
    assert found == [], "\n".join(found)
