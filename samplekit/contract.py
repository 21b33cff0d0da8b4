"""samplekit's public contract: the modules a plugin (or any code outside samplekit) may import.

A public module's names are its ``__all__`` (or, without one, its names not starting with ``_``).
Everything else (``samplekit.processors.*``, ``samplekit.engine``'s helpers, the CLI) may change
without notice: a plugin that needs something from there is asking for a trait, a hook or a
public name. ``tests/test_plugin_contract.py`` holds every plugin in ``plugins/`` to this list.
"""

from __future__ import annotations

__all__ = ["PUBLIC_MODULES", "is_public"]

PUBLIC_MODULES: dict[str, str] = {
    "samplekit": "the API: Processor, Selector, Param, hookimpl, Chain, generate, the errors, ...",
    "samplekit.hookspecs": "the hook specifications (their docstrings are the plugin reference)",
    "samplekit.strategy": "StepStrategy and promised(): what a step strategy may trust",
    "samplekit.strategies.top_k": "the top-k candidate strategy, which a plugin's strategy may build on",
    "samplekit.strategies.candidates": "sampling among candidates, for plugin strategies",
    "samplekit.testing": "the conformance kit for plugin authors",
    "samplekit.bench": "Benchmark and BenchSettings for the register_benchmarks hook, timing helpers",
    "samplekit.hf": "Hugging Face models, and chains inside transformers' generate",
    "samplekit.env": "environment switches parsed as samplekit parses its own",
    "samplekit.safe_io": "reading files a user names, size-limited, with one clear error",
    "samplekit.messages": "short, single-line values in error messages",
}


def is_public(module: str) -> bool:
    """Whether ``module`` (a dotted name) is part of the public contract."""
    return module in PUBLIC_MODULES
