"""MkDocs hook: writes the reference tables from the code at build time, so they cannot drift.

- ``<!-- processor-reference -->`` (docs/processors.md) becomes one section per processor
  registered with ``samplekit.plugins.get_registry()`` (the built-ins and every installed
  plugin): name, aliases, stage, provider, parameters with their allowed values, defaults and
  whether each row of a batch may carry its own value, declared traits and the class docstring.
- ``<!-- serve-fields -->`` (docs/serving.md) becomes the server's request-field table,
  ``samplekit.serve.mapping.markdown_table()`` (what ``python -m samplekit.serve.mapping`` prints).
"""

from __future__ import annotations

import inspect

MARKER = "<!-- processor-reference -->"
SERVE_MARKER = "<!-- serve-fields -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Fill the markers a page holds; a page without one passes through unchanged."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, render_reference())
    if SERVE_MARKER in markdown:
        markdown = markdown.replace(SERVE_MARKER, render_serve_fields())
    return markdown


def render_serve_fields() -> str:
    """The server's chain order and every request field it maps onto a processor."""
    from samplekit.serve.mapping import ORDER, markdown_table

    return "Chain order: " + " → ".join(f"`{slot}`" for slot in ORDER) + "\n\n" + markdown_table()


def render_reference() -> str:
    """The reference in Markdown: a summary table, then one section per processor."""
    from samplekit.plugins import get_registry

    entries = sorted(get_registry(), key=lambda e: (not e.provider.builtin, _STAGES.get(e.cls.stage.value, 9), e.name))
    lines = ["| processor | aliases | stage | what it does | provided by |", "|---|---|---|---|---|"]
    for entry in entries:
        d = entry.describe()
        aliases = ", ".join(f"`{a}`" for a in d["aliases"]) or "—"
        lines.append(f"| [`{d['name']}`](#{_anchor(d['name'])}) | {aliases} | {d['stage']} | "
                     f"{_cell(d['summary'])} | {_provider(d)} |")
    lines.append("")
    for entry in entries:
        lines.extend(_section(entry))
    return "\n".join(lines)


_STAGES = {"context": 0, "logits": 1, "selector": 2}


def _anchor(name: str) -> str:
    return "processor-" + name.replace("_", "-")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _provider(d: dict) -> str:
    if d["builtin"]:
        return "built in"
    return f"plugin `{d['plugin']}` ({d['distribution'] or 'not installed as a distribution'} {d['version'] or ''})".replace(" )", ")")


def _section(entry) -> list[str]:
    d = entry.describe()
    out = [f"### `{d['name']}` {{ #{_anchor(d['name'])} }}", ""]
    facts = [f"stage **{d['stage']}**", _provider(d)]
    if d["aliases"]:
        facts.append("aliases " + ", ".join(f"`{a}`" for a in d["aliases"]))
    out += ["; ".join(facts) + ".", ""]
    if d["params"]:
        out += ["| parameter | type | allowed | default | per row | meaning |", "|---|---|---|---|---|---|"]
        for p in d["params"]:
            default = "required" if p["required"] else f"`{p['default']!r}`"
            per_row = "yes" if p.get("per_row") else "no"
            out.append(f"| `{p['name']}` | {p['type']} | {_cell(p['allowed'])} | {_cell(default)} | {per_row} | "
                       f"{_cell(p['help'])} |")
        out.append("")
    else:
        out += ["No parameters.", ""]
    traits = [name for name, on in d["traits"].items() if on]
    out += ["Declared traits: " + (", ".join(f"`{t}`" for t in traits) if traits else "none") + ".", ""]
    doc = inspect.cleandoc(entry.cls.__doc__ or "")
    if doc:
        out += ["```text", doc.replace("```", "'''"), "```", ""]
    return out
