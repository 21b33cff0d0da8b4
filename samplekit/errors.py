"""One family of user-facing errors.

Anything raised as a ``SampleKitError`` is a problem with the user's input (a config, a flag, a
checkpoint, a plugin): the CLI prints its message plainly and exits with status 2, no traceback.
Messages name the file, the key or path, the value, and what is allowed.
"""

from __future__ import annotations


class SampleKitError(Exception):
    """Base of every error samplekit reports to a user."""


class ConfigError(SampleKitError, ValueError):
    """A chain config (file, dict or command-line override) is invalid."""


class ParameterError(ConfigError):
    """A processor parameter is missing, unknown, of the wrong type or out of range."""


class PluginError(SampleKitError):
    """A plugin is broken: duplicate names, bad registrations, unknown processors."""


class ProcessorContractError(SampleKitError, RuntimeError):
    """A processor broke the framework's contract (shape, dtype, device, NaN, wrote its input)."""


class CheckpointError(SampleKitError):
    """A checkpoint cannot be loaded: unsafe, missing keys, unexpected keys, shape mismatches."""


class TokenizerError(SampleKitError):
    """A tokenizer cannot be loaded (unknown name, missing file, no network for gpt2)."""


class GenerationError(SampleKitError, RuntimeError):
    """Generation cannot continue, e.g. every logit of a row was masked by the chain."""


class InteropError(SampleKitError, RuntimeError):
    """A processor or chain cannot run the way it was called from outside samplekit's engine."""


class ProcessorError(SampleKitError, RuntimeError):
    """A plugin's processor raised an exception while generating; names the processor and plugin."""
