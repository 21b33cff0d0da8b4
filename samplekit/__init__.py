"""samplekit: a plugin-based sampling framework for autoregressive text generation in PyTorch.

The public API, re-exported here; heavy pieces are imported on first use.
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata

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
from samplekit.params import Param
from samplekit.processor import ContextProcessor, Processor, RowRandom, Selector, Stage, StepContext
from samplekit.selection import EmptyRowError, NonFiniteRowError, check_rows, inverse_cdf_sample
from samplekit.strategy import StepStrategy


def _version(distribution: str) -> str:
    """The installed distribution's version (pyproject.toml's, the one place it is written);
    ``0+unknown`` for a checkout that was never installed."""
    try:
        return _metadata.version(distribution)
    except _metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version("samplekit")

_LAZY = {
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
    "CheckpointError", "ConfigError", "ContextProcessor", "EmptyRowError", "GenerationError", "InteropError",
    "NonFiniteRowError", "Param", "ParameterError", "PluginError", "Processor", "ProcessorContractError",
    "ProcessorError", "RowRandom", "SampleKitError", "Selector", "Stage", "StepContext", "StepStrategy",
    "TokenizerError", "check_rows", "hookimpl", "inverse_cdf_sample", *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'samplekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
