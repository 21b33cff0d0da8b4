"""Sampling flags and ``--set`` overrides applied to a ChainConfig, as the commands take them.

Precedence, lowest first: built-in defaults < the config file < the sampling flags
(``--temperature``, ``--top-k-tokens``, ``--length``, ``--seed``, ``--stop``) < ``--set``.
"""

from __future__ import annotations

from typing import Any

from samplekit import yaml_io
from samplekit.errors import ConfigError
from samplekit.messages import short_repr


def build_config(config: str | None, *, temperature: float | None = None, top_k: int | None = None,
                 length: int | None = None, seed: int | None = None, stop: list[str] | None = None,
                 sets: list[str] = ()):
    """The validated ChainConfig: defaults < config file < sampling flags < ``--set``."""
    from samplekit.config import default_config, load_config

    cfg = load_config(config) if config else default_config()
    if temperature is not None:
        cfg.set_or_insert("temperature", "value", temperature, origin="--temperature")
    if top_k is not None:
        cfg.set_or_insert("top_k", "k", top_k, after=("temperature",), origin="--top-k-tokens")
    if length is not None:
        cfg.set_value("max_new_tokens", length, origin="--length")
    if seed is not None:
        cfg.set_value("seed", seed, origin="--seed")
    if stop:
        cfg.set_value("stop", list(stop), origin="--stop")
    apply_sets(cfg, sets)
    return cfg


def apply_sets(cfg, sets: list[str]) -> None:
    """Apply ``--set PROC.PARAM=VALUE`` overrides in order (VALUE parsed as YAML)."""
    for item in sets:
        path, value = parse_set(item)
        cfg.set_value(path, value, origin="--set")


def parse_set(item: str) -> tuple[str, Any]:
    """``"top_k.k=20"`` -> ``("top_k.k", 20)``; a malformed item is a ConfigError. VALUE is YAML,
    read with the config files' safe, bounded loader."""
    path, eq, raw = item.partition("=")
    path = path.strip()
    if (not eq or not path or len(path) > 130 or path.count(".") > 1
            or any(not part.isidentifier() for part in path.split("."))):
        raise ConfigError(f"--set {short_repr(item)}: expected PROCESSOR.PARAM=VALUE (e.g. top_k.k=20) "
                          "or RUN_SETTING=VALUE (e.g. max_new_tokens=50)")
    value = yaml_io.loads(raw, f"--set {path}: the value {short_repr(raw)}", lines=False) if raw.strip() else None
    return path, value
