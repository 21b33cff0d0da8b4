"""Packaging: the distribution name samplekit publishes under, the install hints that name it,
what ``samplekit --version`` loads, and the public import paths."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

from samplekit.distribution import DISTRIBUTION, PLUGINS, PUBLISHED, install_hint

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PLUGIN_PROJECTS = {p.parent.name: tomllib.loads(p.read_text(encoding="utf-8"))
                   for p in sorted((REPO / "plugins").glob("*/pyproject.toml"))}
HINT = re.compile(r"pip install((?:\s+-[-\w]+)*)\s+(['\"]?)([A-Za-z0-9][-A-Za-z0-9_.]*)(\[[^\]]*\])?")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalized(re.match(r"[A-Za-z0-9][-A-Za-z0-9_.]*", requirement).group(0))


def depended_on() -> set[str]:
    """Every distribution samplekit or one of its plugins declares, extras included."""
    projects = [PYPROJECT["project"], *(p["project"] for p in PLUGIN_PROJECTS.values())]
    names = set()
    for project in projects:
        names |= {requirement_name(r) for r in project.get("dependencies", ())}
        for extra in project.get("optional-dependencies", {}).values():
            names |= {requirement_name(r) for r in extra}
    return names


def install_hints() -> list[tuple[str, str, str | None]]:
    """``(file, distribution, extras)`` for every ``pip install NAME`` in samplekit/, plugins/,
    tests/, the README and docs/ (a path such as ``-e plugins/x`` or ``.`` is not a name)."""
    found = []
    files = [*(REPO / "samplekit").rglob("*.py"), *(REPO / "plugins").glob("*/*.md"),
             *(REPO / "plugins").glob("*/samplekit_*/**/*.py"), *(REPO / "plugins").glob("*/tests/*.py"),
             *(REPO / "samplekit" / "serve" / "static").glob("*"), *(REPO / "tests").glob("*.py"),
             REPO / "README.md", *(REPO / "docs").rglob("*.md")]
    for path in files:
        if path == Path(__file__).resolve():  # this file's examples of what is refused
            continue
        for match in HINT.finditer(path.read_text(encoding="utf-8", errors="replace")):
            flags, name, extras = match.group(1), match.group(3), match.group(4)
            if "-e" in flags.split() or name.startswith((".", "plugins")):
                continue
            found.append((str(path.relative_to(REPO)), name, extras))
    return found


def test_the_distribution_is_published_under_a_name_that_is_not_the_unrelated_samplekit():
    assert PYPROJECT["project"]["name"] == DISTRIBUTION == "samplekit-lm"
    assert PYPROJECT["project"]["scripts"] == {"samplekit": "samplekit.cli:main"}
    assert sorted(PLUGIN_PROJECTS) == sorted(PLUGINS)
    assert [p["project"]["name"] for p in PLUGIN_PROJECTS.values()] == list(PLUGIN_PROJECTS)


def test_every_package_in_the_source_tree_is_listed_for_the_wheel():
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "samplekit").rglob("__init__.py")
             if "__pycache__" not in p.parts}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {"samplekit.presets"}  # configs/, mapped by package-dir


def test_every_plugin_depends_on_samplekit_under_its_published_name():
    for folder, project in PLUGIN_PROJECTS.items():
        names = [requirement_name(r) for r in project["project"]["dependencies"]]
        assert DISTRIBUTION in names and "samplekit" not in names, (folder, names)


def test_every_install_hint_names_a_distribution_we_publish_or_depend_on():
    hints = install_hints()
    assert len(hints) >= 5, hints  # the scan finds the hints the program prints
    allowed = {normalized(n) for n in PUBLISHED} | depended_on()
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for where, name, extra in hints:
        assert normalized(name) in allowed, f"{where}: `pip install {name}` installs a distribution we do not publish"
        if extra:
            assert normalized(name) == DISTRIBUTION, f"{where}: {name}{extra}"
            if "{" not in extra:  # not a format placeholder filled in at run time
                assert set(extra.strip("[]").split(",")) <= extras, f"{where}: {extra} is not one of {sorted(extras)}"


def test_install_hint_names_the_distribution_and_its_extras():
    assert install_hint() == "pip install samplekit-lm"
    assert install_hint("serve") == "pip install 'samplekit-lm[serve]'"


def test_the_version_comes_from_the_distributions_metadata():
    import samplekit

    assert samplekit.__version__ == metadata.version(DISTRIBUTION) == PYPROJECT["project"]["version"]


def test_numpy_is_declared_because_the_cpu_torch_wheel_does_not_bring_it():
    assert "numpy" in {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}


def test_version_prints_without_importing_torch_or_numpy():
    code = ("import runpy, sys\nsys.argv = ['samplekit', '--version']\n"
            "try:\n    runpy.run_module('samplekit', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy', 'tiktoken') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    version_line, loaded = done.stdout.splitlines()
    assert version_line.startswith("samplekit ") and loaded == "[]", done.stdout
    assert "Failed to initialize NumPy" not in done.stderr


def test_the_builtin_processor_classes_import_from_samplekit_processors():
    import samplekit.processors as public
    from samplekit.plugins import PluginHost

    registry = PluginHost(autoload=False, blocked=()).build_registry()
    builtin = {entry.cls for entry in (registry.get(n) for n in registry.names())
               if entry.cls.__module__.startswith("samplekit.processors.")}
    assert builtin and {getattr(public, cls.__name__) for cls in builtin} == builtin
    assert set(public.__all__) == {cls.__name__ for cls in builtin}
    from samplekit.processors import TopK  # the README's example

    assert TopK is registry.get("top_k").cls


def test_an_unknown_name_in_samplekit_processors_is_an_attribute_error():
    import samplekit.processors

    with pytest.raises(AttributeError, match="NoSuchProcessor"):
        samplekit.processors.NoSuchProcessor


def test_every_public_name_of_samplekit_resolves():
    import samplekit

    for name in samplekit.__all__:
        assert getattr(samplekit, name) is not None, name
    from samplekit import Processor, StepContext  # torch-backed, loaded on first use

    assert Processor.__module__ == "samplekit.processor" and StepContext.__module__ == "samplekit.processor"
