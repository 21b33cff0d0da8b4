"""samplekit: a plugin-based sampling framework for autoregressive text generation in PyTorch.

The public API, re-exported here; heavy pieces are imported on first use.
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata

from samplekit.distribution import DISTRIBUTION
from samplekit.errors import (
    CheckpointError,
    ConfigError,
    GenerationError,
    InteropError,
    ParameterError,
    PluginError,
    ProcessorContractError,
    ProcessorError,
    SampleKitError,
    TokenizerError,
)
from samplekit.hookspecs import hookimpl
from samplekit.params import TOKEN_ID_LIMIT, Param


def _version(distribution: str) -> str:
    """The installed distribution's version (pyproject.toml's, the one place it is written);
    ``0+unknown`` for a checkout that was never installed."""
    try:
        return _metadata.version(distribution)
    except _metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version(DISTRIBUTION)

_LAZY = {
    # torch-backed: imported on first use, so `samplekit --version` never loads torch
    "ContextProcessor": "samplekit.processor",
    "Processor": "samplekit.processor",
    "RowRandom": "samplekit.processor",
    "Selector": "samplekit.processor",
    "Stage": "samplekit.processor",
    "StepContext": "samplekit.processor",
    "EmptyRowError": "samplekit.selection",
    "NonFiniteRowError": "samplekit.selection",
    "check_rows": "samplekit.selection",
    "inverse_cdf_sample": "samplekit.selection",
    "StepStrategy": "samplekit.strategy",
    "Chain": "samplekit.chain",
    "ChainRun": "samplekit.chain",
    "load_config": "samplekit.config",
    "load_chain": "samplekit.config",
    "chain_from_config": "samplekit.config",
    "get_registry": "samplekit.plugins",
    "generate": "samplekit.engine",
    "generate_stream": "samplekit.engine",
    "generate_text": "samplekit.engine",
    "GenerationResult": "samplekit.engine",
    "GPTModel": "samplekit.model.gpt",
    "ModelConfig": "samplekit.model.gpt",
    "KVCache": "samplekit.model.gpt",
    "load_checkpoint": "samplekit.model.checkpoint",
    "save_checkpoint": "samplekit.model.checkpoint",
    "load_tokenizer": "samplekit.model.tokenizer",
}

__all__ = [
    "CheckpointError", "ConfigError", "GenerationError", "InteropError", "Param", "ParameterError",
    "PluginError", "ProcessorContractError", "ProcessorError", "SampleKitError", "TOKEN_ID_LIMIT", "TokenizerError", "hookimpl",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'samplekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
