"""The name samplekit is published under, and the install hints that name it.

The import name and the command are ``samplekit``; the distribution on the package index is
``samplekit-lm`` (``samplekit`` there is an unrelated project). Every ``pip install`` hint the
program prints comes from ``install_hint`` or names one of ``PUBLISHED``.

    >>> install_hint("serve")
    "pip install 'samplekit-lm[serve]'"
"""

from __future__ import annotations

DISTRIBUTION = "samplekit-lm"
"""samplekit's own distribution name (pyproject.toml's ``[project] name``)."""

PLUGINS = ("samplekit-dry", "samplekit-grammar", "samplekit-mirostat", "samplekit-native", "samplekit-xtc")
"""The plugin distributions in plugins/, published under these names."""

PUBLISHED = (DISTRIBUTION, *PLUGINS)


def install_hint(extra: str | None = None) -> str:
    """The command that installs samplekit (with ``extra``, one of pyproject's optional extras)."""
    return f"pip install '{DISTRIBUTION}[{extra}]'" if extra else f"pip install {DISTRIBUTION}"
