"""The documentation site builds with ``mkdocs build --strict`` and the examples of the README and
of ``docs/`` work, so a page that stops matching the code fails here.

How each fenced block of a page is checked (with sybil, in page order, one namespace per page):

- ``python``: executed.
- ``bash``: every ``samplekit ...`` command line is checked against the CLI itself (the command
  and every option must exist); the cheap offline ones (``generate``, ``config``, ``processors``,
  ``plugins``, ``info``, ``--version`` on the demo model, with every file they name present, and
  any command given ``--help``) are also run in-process and must exit 0.
- ``console``: each ``$ samplekit ...`` line is run and its output must equal the lines shown.
- ``yaml``/``json`` whose first line is ``# NAME.yaml`` (a bare file name): written to the
  working folder, so the commands after it can use the file.

A block that cannot run here (a GPU, a Hugging Face folder, a server, a Ray cluster) is preceded
by ``<!-- skip: next "why" -->``, visible in the page's source; the reason is required.
Everything runs in a temporary folder holding a link to ``configs/``, never in the repository.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in DOCS.glob("*.md"))]

# -- the site ----------------------------------------------------------------------------------


def _mkdocs_available() -> bool:
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
        import mkdocstrings_handlers.python  # noqa: F401
    except ImportError:
        return False
    return True


needs_mkdocs = pytest.mark.skipif(not _mkdocs_available(),
                                  reason="mkdocs-material and mkdocstrings are not installed (the `docs` extra)")


@needs_mkdocs
def test_the_site_builds_strictly_offline_with_every_processor_in_its_reference(tmp_path):
    """--strict turns any warning (a broken link or anchor, a docstring mkdocstrings cannot read)
    into a failure; the built pages load nothing from another host."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    reference = (site / "processors.html").read_text(encoding="utf-8")
    from samplekit.plugins import get_registry

    for entry in get_registry():
        assert f'id="processor-{entry.name.replace("_", "-")}"' in reference, f"{entry.name} missing from the reference"
    for page in site.glob("*.html"):
        remote = re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="(https?://[^"]+)"', page.read_text(encoding="utf-8"))
        assert not remote, f"{page.name} loads {remote[0]}: the site must work offline"


def references_hook():
    """docs/hooks/references.py, the MkDocs hook that writes the generated tables."""
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        import references
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    return references


def test_the_processor_reference_is_written_from_the_registry():
    """The hook fills the marker with every registered processor, its parameters and its summary."""
    references = references_hook()
    page = (DOCS / "processors.md").read_text(encoding="utf-8")
    assert references.MARKER in page
    filled = references.on_page_markdown(page, None, None, None)
    assert references.MARKER not in filled
    from samplekit.plugins import get_registry

    for entry in get_registry():
        assert f"### `{entry.name}`" in filled and entry.cls.summary() in filled
        for param in entry.cls.params:
            assert f"| `{param.name}` |" in filled, f"{entry.name}.{param.name} missing from the reference"
    assert references.on_page_markdown("# other page", None, None, None) == "# other page"


def test_the_server_field_table_is_written_from_the_mapping():
    references = references_hook()
    page = (DOCS / "serving.md").read_text(encoding="utf-8")
    assert references.SERVE_MARKER in page
    filled = references.on_page_markdown(page, None, None, None)
    from samplekit.serve.mapping import FIELDS

    for field in FIELDS:
        assert f"| `{field.name}` |" in filled, f"request field {field.name} missing from docs/serving.md"


def test_every_skipped_example_says_why():
    for page in PAGES:
        text = (REPO / page).read_text(encoding="utf-8")
        for directive in re.findall(r"<!--+\s*skip:\s*(.*?)\s*-+->", text):
            assert re.fullmatch(r'(next|start) "[^"]{8,}"|end', directive), \
                f"{page}: skip directive {directive!r} must give its reason: skip: next \"why\""


def test_the_docs_hold_the_hook_and_preset_documentation():
    """Every hook specification is documented for plugin authors; every preset in the README."""
    from samplekit import hookspecs
    from samplekit.config import preset_names

    plugins_page = (DOCS / "plugins.md").read_text(encoding="utf-8")
    hooks = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "samplekit_spec")]
    assert hooks
    for name in hooks:
        assert f"`{name}(" in plugins_page, f"hook {name} is not documented in docs/plugins.md"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in preset_names():
        assert f"| `{name}` |" in readme, f"preset {name} is missing from README.md's table"


def test_the_readme_stays_short_and_links_every_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 300
    for page in sorted(DOCS.glob("*.md")):
        if page.name not in ("index.md", "api.md"):
            assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    assert "mkdocs serve" in readme and "site/index.html" in readme
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if not re.match(r"https?://", target):
            assert (REPO / target).exists(), f"README.md links {target}, which does not exist"


# -- the examples ------------------------------------------------------------------------------

try:
    from sybil import Document, Example
    from sybil.evaluators.skip import Skipper
    from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser
except ImportError:  # the `docs` extra is not installed
    Document = None

RUNNABLE = {"generate", "config", "processors", "plugins", "info"}
FILE_LIKE = re.compile(r"(^\.{0,2}/|/|\.(pt|txt|ya?ml|jsonl?|logits|png|tiktoken)$)")
_ran_commands: dict[tuple, str] = {}


def _cli():
    import typer

    from samplekit.cli import app

    return app, typer.main.get_command(app)


def _shell_commands(source: str) -> list[str]:
    """Command lines of a shell block: continuation lines joined, blank lines and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", source)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _samplekit_words(piece: list[str]) -> list[str] | None:
    """The arguments after ``samplekit`` in one pipeline piece, or None if it runs something else."""
    if piece[:3] == ["python", "-m", "samplekit"]:
        return piece[3:]
    if piece and Path(piece[0]).name == "samplekit":
        return piece[1:]
    return None


def _check_options(words: list[str], where: str):
    """Fail unless the command and every option exist; the click command it names."""
    _, group = _cli()
    command, rest = group, list(words)
    while rest and hasattr(command, "commands") and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"{where}: `samplekit ... {name}`: no such command"
        command = command.commands[name]
    known = {"--help"}
    for param in command.params:
        known.update(getattr(param, "opts", ()))
        known.update(getattr(param, "secondary_opts", ()))
    if command is group:
        known.update({"--install-completion", "--show-completion"})
    for word in rest:
        word = word.strip("[]")
        if word.startswith("-") and word != "-" and not re.fullmatch(r"-\d[\d.e-]*", word):
            assert word.split("=")[0] in known, f"{where}: {' '.join(words)}: option {word} does not exist"
    return command


def _run(words: list[str], stdin: str | None, where: str) -> str:
    """Run one command in-process (the CLI's own app), once per command, files and stdin."""
    from typer.testing import CliRunner

    key = (tuple(words), stdin, tuple(sorted((p, Path(p).read_bytes()) for p in os.listdir(".") if Path(p).is_file())))
    if key not in _ran_commands:
        app, _ = _cli()
        result = CliRunner().invoke(app, words, input=stdin, catch_exceptions=True)
        output = result.output
        assert result.exit_code == 0, f"{where}: `samplekit {shlex.join(words)}` exited {result.exit_code}:\n{output}"
        _ran_commands[key] = output
    return _ran_commands[key]


def _expand(words: list[str]) -> list[str] | None:
    """The words with globs expanded; None if a file they name is not here (not run, only checked)."""
    out = []
    for word in words:
        if word.startswith("-") or word.startswith("[") or not FILE_LIKE.search(word) or "\\" in word:
            out.append(word)
            continue
        matches = sorted(glob.glob(word))
        if not matches:
            return None
        out.extend(matches)
    return out


def check_shell(example: "Example") -> None:
    where = f"{example.path}:{example.line}"
    for line in _shell_commands(example.parsed):
        pieces = [shlex.split(p, comments=True) for p in line.split(" | ")]
        for i, piece in enumerate(pieces):
            words = _samplekit_words(piece)
            if words is None or "..." in words:
                continue
            _check_options(words, where)
            runnable = bool(words) and (words[0] in RUNNABLE or words[0] == "--version" or "--help" in words)
            stdin = None
            if len(pieces) > 1:  # only `echo TEXT | samplekit ...` runs, TEXT on standard input
                runnable = runnable and len(pieces) == 2 and i == 1 and pieces[0][:1] == ["echo"]
                stdin = " ".join(pieces[0][1:]) + "\n"
            expanded = _expand([w for w in words if not w.startswith("[")])  # `[--json]`: optional
            if runnable and expanded is not None:
                _run(expanded, stdin, where)


def check_console(example: "Example") -> None:
    """``$ samplekit ...`` lines, each followed by its expected output (stdout and stderr)."""
    where = f"{example.path}:{example.line}"
    blocks = re.split(r"^\$ ", example.parsed, flags=re.M)[1:]
    assert blocks, f"{where}: a console block must start with `$ command`"
    for block in blocks:
        command, _, expected = block.partition("\n")
        words = _samplekit_words(shlex.split(command))
        assert words is not None, f"{where}: only samplekit commands run in console blocks: {command}"
        _check_options(words, where)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "200"}
        done = subprocess.run([sys.executable, "-m", "samplekit", *words], capture_output=True, text=True,
                              env=env, timeout=300, stdin=subprocess.DEVNULL)
        got = (done.stdout + done.stderr).strip()
        assert got == expected.strip(), f"{where}: `{command}` printed\n{got}\nbut the page shows\n{expected.strip()}"


def write_named_file(example: "Example") -> None:
    """A data block whose first line is ``# NAME.ext`` becomes that file in the working folder."""
    first = example.parsed.splitlines()[0] if example.parsed else ""
    match = re.fullmatch(r"#\s*([\w.-]+\.(?:ya?ml|json|jsonl|txt))\s*", first)
    if match:
        Path(match.group(1)).write_text(example.parsed, encoding="utf-8")


def _parse(page: str) -> "Document":
    parsers = [
        SkipParser(),
        PythonCodeBlockParser(),
        CodeBlockParser("bash", check_shell),
        CodeBlockParser("console", check_console),
        CodeBlockParser("yaml", write_named_file),
        CodeBlockParser("json", write_named_file),
    ]
    return Document.parse(str(REPO / page), *parsers)


@pytest.mark.skipif(Document is None, reason="sybil is not installed (the `docs` extra)")
@pytest.mark.parametrize("page", PAGES)
def test_the_examples_of_the_page_work(page, tmp_path, monkeypatch):
    """Every example of the page runs as shown, in order, unless marked `skip` with a reason."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    document = _parse(page)
    ran, skipped = 0, []
    for example in document:
        try:
            example.evaluate()
        except SkipTest as why:
            skipped.append(f"line {example.line}: {why}")
            continue
        evaluator = example.region.evaluator
        ran += not isinstance(evaluator, Skipper) and evaluator is not write_named_file
    print(f"{page}: {ran} examples ran, {len(skipped)} skipped", *skipped, sep="\n  ")


def test_the_shell_checker_catches_a_command_or_option_that_does_not_exist():
    pytest.importorskip("sybil")
    with pytest.raises(AssertionError, match="option --no-such-flag does not exist"):
        _check_options(["generate", "ROMEO:", "--no-such-flag"], "page.md:1")
    with pytest.raises(AssertionError, match="no such command"):
        _check_options(["config", "frobnicate"], "page.md:1")
    assert _check_options(["config", "show", "creative", "--set", "top_k.k=20"], "page.md:1").name == "show"
