"""Chains to compare, each with the name of its row: a preset's name, or a file's stem."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from samplekit.chain import Chain
from samplekit.lab.errors import LabError

RESERVED = ("human", "model")  # rows the lab adds itself


@dataclass
class NamedChain:
    name: str
    chain: Chain
    source: str


def named_chains(specs: Sequence[str]) -> list[NamedChain]:
    """Load every spec (a YAML path or a preset name); a row is named after the preset or the
    file's stem, or after the spec as written when two would share a name."""
    from samplekit.config import load_config, preset_path

    if not specs:
        raise LabError("name at least one chain: a preset (samplekit config presets) or a YAML file")
    loaded = [(spec, load_config(spec).build_chain()) for spec in specs]
    stems = [_stem(spec, preset_path) for spec in specs]
    out = []
    for (spec, chain), stem in zip(loaded, stems):
        name = stem if stems.count(stem) == 1 and stem not in RESERVED else spec
        if any(o.name == name for o in out):
            raise LabError(f"chain {spec!r} is named twice; name each chain once")
        out.append(NamedChain(name, chain, spec))
    return out


def _stem(spec: str, preset_path) -> str:
    path = Path(spec)
    if not path.exists() and preset_path(spec) is not None:
        return spec
    return path.stem if path.suffix in (".yaml", ".yml") else path.name
