"""Load and save GPTModel checkpoints safely.

A checkpoint is a plain dict saved with ``torch.save``::

    {"model_state_dict": {...}, "config": {...ModelConfig keys...},
     "optimizer_state_dict": {...} (optional), "epoch": int, "train_loss": float, "val_loss": float,
     "tokenizer": {"name": ..., "file": ..., ...} (optional), **extra metadata}

Loading always uses ``torch.load(weights_only=True)``: a file holding arbitrary Python objects,
which could run code when unpickled, is refused. The config is checked against the tensors the
file holds before any model exists (``weights``). A JSON sidecar beside the file (``model.json``
for ``model.pt``, see ``sidecar``) adds or replaces metadata such as evaluation figures. A folder
of Hugging Face GPT-2 weights (config.json plus model.safetensors or pytorch_model.bin) loads too
(see ``hf_gpt2``).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samplekit.errors import CheckpointError
from samplekit.model import hf_gpt2
from samplekit.messages import short_repr as short
from samplekit.model.device import resolve_device
from samplekit.model.files import safe_torch_load
from samplekit.model.gpt import GPTModel, ModelConfig
from samplekit.model.sidecar import read_sidecar, sidecar_path
from samplekit.model.weights import WRAPPER_PREFIXES, build_model, check_config, strip_wrapper_prefixes

__all__ = ["CheckpointInfo", "KNOWN_KEYS", "REQUIRED_KEYS", "WRAPPER_PREFIXES", "build_model",
           "load_checkpoint", "resolve_checkpoint_path", "safe_torch_load", "save_checkpoint",
           "strip_wrapper_prefixes"]

REQUIRED_KEYS = ("model_state_dict", "config")
KNOWN_KEYS = REQUIRED_KEYS + ("optimizer_state_dict", "epoch", "train_loss", "val_loss", "tokenizer")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself; ``extra`` holds every other metadata key.
    ``sidecar``: the JSON file whose metadata was merged in (it wins over the checkpoint's)."""

    path: Path
    config: ModelConfig
    epoch: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    tokenizer: dict | None = None
    extra: dict = field(default_factory=dict)
    num_parameters: int = 0
    sidecar: Path | None = None


def _demo_checkpoint() -> Path:
    try:
        demo = importlib.import_module("samplekit.demo")
        path = Path(demo.DEMO_CHECKPOINT)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"the demo model is not installed (samplekit.demo.DEMO_CHECKPOINT: {short(exc, 120)}); "
            "pass the path of a checkpoint instead"
        ) from exc
    if not path.exists():
        raise CheckpointError(f"the demo model is not installed: {path} does not exist")
    return path


def resolve_checkpoint_path(spec: str | os.PathLike) -> Path:
    """``"demo"`` means the bundled demo checkpoint; anything else is a file or a HF folder."""
    if isinstance(spec, str) and spec == "demo":
        return _demo_checkpoint()
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (pass a .pt file, a Hugging Face "
                              "GPT-2 folder, or 'demo')")
    if not (path.is_file() or path.is_dir()):
        raise CheckpointError(f"checkpoint {path} is not a regular file or a folder (pass a .pt file, "
                              "a Hugging Face GPT-2 folder, or 'demo')")
    return path


def _number(raw: dict, key: str, kind: type, source: Path) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if (isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_meta
            and value.layout == torch.strided):
        value = value.item()
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise CheckpointError(f"{source}: '{key}' must be {'an int' if kind is int else 'a number'}, "
                              f"found {short(value)}")
    return kind(value)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[GPTModel, CheckpointInfo]:
    """The model (float32, eval mode, on ``device``) and its metadata.

    ``path``: a .pt file, a Hugging Face GPT-2 folder, or ``"demo"``.
    """
    path = resolve_checkpoint_path(path)
    target = resolve_device(device)
    if path.is_dir():
        model, config, meta = hf_gpt2.load_hf_gpt2_with_metadata(path)
        info = CheckpointInfo(path=path, config=config, extra=meta,
                              num_parameters=model.num_parameters())
        return model.to(target), info
    raw = safe_torch_load(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: a checkpoint must be a dict with keys "
                              f"{', '.join(REQUIRED_KEYS)}; found {type(raw).__name__}")
    absent = [k for k in REQUIRED_KEYS if k not in raw]
    if absent:
        found = ", ".join(short(str(k), 40) for k in list(raw)[:10]) or "none"
        raise CheckpointError(f"{path}: the checkpoint has no {', '.join(repr(k) for k in absent)} "
                              f"(keys found: {found}{', ...' if len(raw) > 10 else ''})")
    config = check_config(raw["config"], path)
    sidecar = read_sidecar(path)
    meta = {**{k: v for k, v in raw.items() if k not in REQUIRED_KEYS}, **sidecar}
    tokenizer = meta.get("tokenizer")
    if isinstance(tokenizer, str):
        tokenizer = {"name": tokenizer}
    if tokenizer is not None and not isinstance(tokenizer, dict):
        raise CheckpointError(f"{path}: 'tokenizer' must be a dict like {{'name': 'gpt2'}}, "
                              f"found {type(tokenizer).__name__}")
    side = sidecar_path(path) if sidecar else None

    def number(key: str, kind: type) -> Any:
        return _number(meta, key, kind, side if key in sidecar else path)

    info = CheckpointInfo(
        path=path, config=config, epoch=number("epoch", int),
        train_loss=number("train_loss", float), val_loss=number("val_loss", float),
        tokenizer=tokenizer,
        extra={k: v for k, v in meta.items() if k not in KNOWN_KEYS},
        num_parameters=0,
        sidecar=side,
    )
    model = build_model(config, raw["model_state_dict"], path)
    info = replace(info, num_parameters=model.num_parameters())
    return model.to(target), info


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _plain(value: Any) -> bool:
    """Whether weights_only loading accepts ``value`` (plain containers, numbers, tensors)."""
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, epoch: int | None = None,
                    train_loss: float | None = None, val_loss: float | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    tokenizer: dict | str | None = None, **extra: Any) -> Path:
    """Write ``model`` and its metadata atomically: a temporary file in the same folder, then
    ``os.replace``, so an existing checkpoint is never left half-written."""
    path = Path(path).expanduser()
    model = _unwrap(model)
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"save_checkpoint needs a GPTModel (with a ModelConfig .config), "
                        f"got {type(model).__name__}")
    clash = sorted(set(extra) & set(KNOWN_KEYS))
    if clash:
        raise CheckpointError(f"save_checkpoint: extra metadata keys {clash} are reserved")
    if isinstance(tokenizer, str):
        tokenizer = {"name": tokenizer}
    bad = [k for k, v in {"tokenizer": tokenizer, **extra}.items() if not _plain(v)]
    if bad:
        raise CheckpointError(f"save_checkpoint: metadata {bad} must be plain data (dict, list, str, "
                              "int, float, bool, None, tensors), or load_checkpoint would refuse it")
    payload: dict[str, Any] = {
        "model_state_dict": model.state_dict(),
        "config": config.to_dict(),
        "epoch": None if epoch is None else int(epoch),
        "train_loss": None if train_loss is None else float(train_loss),
        "val_loss": None if val_loss is None else float(val_loss),
    }
    if optimizer is not None:
        payload["optimizer_state_dict"] = optimizer.state_dict()
    if tokenizer is not None:
        payload["tokenizer"] = tokenizer
    payload.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
