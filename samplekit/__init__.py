"""samplekit: a plugin-based sampling framework for autoregressive text generation in PyTorch.

The public API, re-exported here; heavy pieces are imported on first use.
"""

from __future__ import annotations

import importlib

from samplekit.errors import (
    CheckpointError,
    ConfigError,
    GenerationError,
    ParameterError,
    PluginError,
    ProcessorContractError,
    SampleKitError,
    TokenizerError,
)
from samplekit.hookspecs import hookimpl
from samplekit.params import Param
from samplekit.processor import ContextProcessor, Processor, RowRandom, Selector, Stage, StepContext

__version__ = "0.1.0"

_LAZY = {
    "Chain": "samplekit.chain",
    "ChainRun": "samplekit.chain",
    "load_config": "samplekit.config",
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
    "CheckpointError", "ConfigError", "ContextProcessor", "GenerationError", "Param", "ParameterError",
    "PluginError", "Processor", "ProcessorContractError", "RowRandom", "SampleKitError", "Selector",
    "Stage", "StepContext", "TokenizerError", "hookimpl", *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'samplekit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
