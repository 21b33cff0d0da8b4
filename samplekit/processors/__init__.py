"""samplekit's built-in processors, one family per module; each module is a plugin.

The classes are importable from here (the public path; each loads on first use)::

    from samplekit.processors import TopK, TopP, Temperature, Multinomial
"""

from __future__ import annotations

import importlib

_CLASSES = {
    "ContextWindow": "context", "EpsilonCutoff": "cutoffs", "EtaCutoff": "cutoffs",
    "DynamicTemperature": "dynamic_temperature", "Gumbel": "gumbel", "LogitBias": "logit_bias",
    "BannedTokens": "logit_bias", "BannedStrings": "logit_bias", "MinNewTokens": "min_new_tokens",
    "MinP": "min_p", "NoRepeatNGram": "no_repeat_ngram", "RepetitionPenalty": "penalties",
    "FrequencyPenalty": "penalties", "PresencePenalty": "penalties", "Greedy": "selectors",
    "Multinomial": "selectors", "Temperature": "temperature", "TopK": "top_k", "TopNSigma": "top_n_sigma",
    "TopP": "top_p", "TypicalP": "typical_p",
    "PLess": "p_less", "PLessNorm": "p_less", "TopH": "top_h", "AdaptiveP": "adaptive_p", "Smoothing": "smoothing",
    "SequenceBias": "sequences", "BannedSequences": "sequences",
}

__all__ = sorted(_CLASSES)


def __getattr__(name: str):
    module = _CLASSES.get(name)
    if module is None:
        raise AttributeError(f"module 'samplekit.processors' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"samplekit.processors.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
