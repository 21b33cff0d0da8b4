"""Metadata kept beside a checkpoint, so that re-evaluating a model never rewrites its weights.

The sidecar of ``model.pt`` is ``model.json``: a JSON object that names its checkpoint
(``"sidecar_for": "model.pt"``) and whose other keys add to or replace the checkpoint's metadata
(``evaluation``, ``val_loss``, ...). A ``model.json`` without ``sidecar_for`` is some other file
and is left alone. A sidecar cannot replace the weights, the config, the optimizer state or the
tokenizer.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from samplekit.errors import CheckpointError
from samplekit.messages import short_repr as short
from samplekit.safe_io import load_json_file

MARKER = "sidecar_for"
PROTECTED = ("model_state_dict", "config", "optimizer_state_dict", "tokenizer")


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.json``."""
    return Path(checkpoint).with_suffix(".json")


def read_sidecar(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """The metadata the sidecar of ``checkpoint`` adds (without its marker); {} when none."""
    checkpoint = Path(checkpoint)
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return {}
    data = load_json_file(path, what="checkpoint sidecar", error=CheckpointError)
    if not isinstance(data, dict) or MARKER not in data:
        return {}  # not a sidecar: some other JSON file that happens to share the name
    if data[MARKER] != checkpoint.name:
        raise CheckpointError(f"{path}: '{MARKER}' is {short(data[MARKER])}, but this sidecar sits "
                              f"beside {checkpoint.name}; fix the name or remove the file")
    clash = [k for k in PROTECTED if k in data]
    if clash:
        raise CheckpointError(f"{path}: a sidecar cannot set {', '.join(clash)}; only metadata such "
                              "as evaluation figures and losses")
    return {k: v for k, v in data.items() if k != MARKER}


def update_sidecar(checkpoint: str | os.PathLike, **entries: Any) -> Path:
    """Set ``entries`` in the sidecar of ``checkpoint`` (created if absent), atomically; the
    checkpoint itself is not touched. Returns the sidecar's path."""
    checkpoint = Path(checkpoint)
    clash = [k for k in (*PROTECTED, MARKER) if k in entries]
    if clash:
        raise CheckpointError(f"update_sidecar: {', '.join(clash)} cannot be set in a sidecar")
    data = {MARKER: checkpoint.name, **read_sidecar(checkpoint), **entries}
    path = sidecar_path(checkpoint)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a sidecar is as readable as its checkpoint
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
