"""No import cycle anywhere in samplekit: checked on the import graph read from the source, and
by importing each module first in a fresh interpreter.

The rule: module A depends on module B when A imports B anywhere in its source: at module level
or inside a function (an import deferred to first use, for an optional extra or for speed, is
still a dependency: it runs the first time the function does, and a cycle through it is a
cycle in the design), except under ``if TYPE_CHECKING:``. Importing ``a.b.c`` also runs the
packages ``a`` and ``a.b`` (their ``__init__``), so A depends on those too, unless A lies inside
them (a package's own modules import each other freely while it initialises). The graph of
these dependencies over every module of samplekit has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "samplekit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The samplekit modules ``path`` imports anywhere (functions too), except under
    ``if TYPE_CHECKING:``. ``from a import b`` counts ``a.b`` when that is a module, else ``a``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found = {m for m in found if m in modules}
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}  # name and its packages
    return {m for m in found | parents if m in modules and m not in own}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_imports_and_skips_type_checking_ones(tmp_path):
    graph = import_graph()
    assert "samplekit.model.gpt" in graph["samplekit.model.weights"]
    assert "samplekit.model.sidecar" in graph["samplekit.model.checkpoint"]
    assert "samplekit.model.checkpoint" not in graph["samplekit.model.tokenizer"]  # TYPE_CHECKING only
    assert "samplekit.demo.corpus" in graph["samplekit.demo.evaluate"]  # inside main()


def test_the_graph_counts_the_packages_an_import_runs_but_not_the_importers_own():
    graph = import_graph()
    assert "samplekit.hf" in graph["samplekit.bench.overhead"]  # samplekit.hf.export runs samplekit.hf
    assert "samplekit.bench" not in graph["samplekit.bench.overhead"]  # its own package
    assert "samplekit" not in graph["samplekit.chain"]  # every module lies inside samplekit


def test_no_import_cycle_anywhere_in_samplekit():
    bad = cycles(import_graph())
    assert bad == [], f"import cycles: {bad}"


def test_the_core_imports_no_integration():
    """Chain, processors, the engine and the plugin machinery name no integration: Hugging Face,
    the server, the lab, the benchmarks, the jobs and the CLI sit on them, never the reverse."""
    graph = import_graph()
    core = [n for n in graph if n in ("samplekit.chain", "samplekit.processor", "samplekit.engine", "samplekit.registry",
                                       "samplekit.params", "samplekit.strategy", "samplekit.hookspecs")
            or n.startswith(("samplekit.processors", "samplekit.strategies"))]
    integrations = ("samplekit.hf", "samplekit.serve", "samplekit.lab", "samplekit.bench", "samplekit.jobs",
                    "samplekit.cli", "samplekit.interop", "samplekit.throughput")
    reached = {n: sorted(m for m in graph[n] if m.startswith(integrations)) for n in core}
    assert {n: m for n, m in reached.items() if m} == {}


def test_each_module_imports_first_in_a_fresh_interpreter():
    """Each module, imported with no samplekit module loaded before it, imports (a module whose
    optional extra is not installed is skipped: that is its extra's error, not a cycle)."""
    names = sorted(n for n in import_graph() if not n.endswith("__main__"))  # __main__ runs the CLI
    script = (
        "import importlib, sys\n"
        "imported = 0\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'samplekit' or m.startswith('samplekit.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        if (exc.name or 'samplekit').split('.')[0] == 'samplekit':\n"
        "            raise\n"
        "        continue\n"
        "    imported += 1\n"
        "print('ok', imported)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-2000:]
    assert int(result.stdout.split()[1]) >= len(names) // 2, result.stdout  # most need no extra
