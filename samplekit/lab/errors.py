"""The lab's user-facing errors (``SampleKitError``: one ``error:`` line, exit 2, at the CLI)."""

from __future__ import annotations

import importlib
from types import ModuleType

from samplekit.errors import SampleKitError


class LabError(SampleKitError):
    """Bad input to a lab command: a prompt file, a corpus name, a sample count."""


class MissingExtraError(LabError):
    """An optional dependency is not installed; the message names the extra to install."""


class RecordError(LabError):
    """A logits record cannot be read: not a record, another format version, damaged."""


class ReplayError(LabError):
    """A chain cannot be replayed exactly on a record (the message names chain and position)."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError saying which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: "
            f"pip install 'samplekit-lm[{extra}]'") from None
