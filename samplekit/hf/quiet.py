"""transformers' progress bars and info logs, off while samplekit loads a model."""

from __future__ import annotations

import contextlib

__all__ = ["quiet_transformers"]


@contextlib.contextmanager
def quiet_transformers():
    """transformers' progress bars and info logs off while loading (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
