"""Load and save GPTModel checkpoints safely.

A checkpoint is a plain dict saved with ``torch.save``::

    {"model_state_dict": {...}, "config": {...ModelConfig keys...},
     "optimizer_state_dict": {...} (optional), "epoch": int, "train_loss": float, "val_loss": float,
     "tokenizer": {"name": ..., "file": ..., ...} (optional), **extra metadata}

Loading always uses ``torch.load(weights_only=True)``: a file holding arbitrary Python objects,
which could run code when unpickled, is refused. A folder of Hugging Face GPT-2 weights
(config.json plus model.safetensors or pytorch_model.bin) loads too (see ``hf_gpt2``).
"""

from __future__ import annotations

import importlib
import itertools
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samplekit.errors import CheckpointError
from samplekit.model.device import resolve_device
from samplekit.model.gpt import GPTModel, ModelConfig

REQUIRED_KEYS = ("model_state_dict", "config")
KNOWN_KEYS = REQUIRED_KEYS + ("optimizer_state_dict", "epoch", "train_loss", "val_loss", "tokenizer")
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DataParallel / DDP
# The usage guide's attention keeps its causal mask as a buffer; GPTModel builds the mask itself.
_IGNORED_KEYS = re.compile(r"trf_blocks\.\d+\.att\.mask")
_RESAVE_HINT = (
    "If you trust the file, re-save it as a plain dict of tensors and numbers:\n"
    "    ckpt = torch.load(path, weights_only=False)  # runs the file's code: trusted files only\n"
    "    torch.save({'model_state_dict': ckpt['model_state_dict'], 'config': dict(ckpt['config']),\n"
    "                'epoch': int(ckpt['epoch']), 'train_loss': float(ckpt['train_loss']),\n"
    "                'val_loss': float(ckpt['val_loss'])}, 'clean.pt')"
)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself; ``extra`` holds every other metadata key."""

    path: Path
    config: ModelConfig
    epoch: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    tokenizer: dict | None = None
    extra: dict = field(default_factory=dict)
    num_parameters: int = 0


def _demo_checkpoint() -> Path:
    try:
        demo = importlib.import_module("samplekit.demo")
        path = Path(demo.DEMO_CHECKPOINT)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"the demo model is not installed (samplekit.demo.DEMO_CHECKPOINT: {exc}); "
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
    return path


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU; a refusal or a bad file is a CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if not re.search(r"global|reduce|class|instantiate|build", text, re.IGNORECASE):
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {text}") from exc
        found = re.search(r"GLOBAL ([\w.]+)", text)
        culprit = f" (here: {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: the checkpoint contains Python objects{culprit} that would run code on load, "
            "and samplekit refuses it (it loads with torch.load(weights_only=True)).\n" + _RESAVE_HINT
        ) from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... for a bad file
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint "
                              f"({type(exc).__name__}: {exc})") from None


def _check_config(raw: Any, source: str | Path) -> ModelConfig:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: 'config' must be a dict of ModelConfig values, "
                              f"found {type(raw).__name__}")
    problems = []
    for f in fields(ModelConfig):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if f.name == "qkv_bias":
            ok, want = isinstance(value, bool), "a bool"
        elif f.name == "drop_rate":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
            want = "a number from 0 to 1"
        elif f.name == "layer_norm_eps":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            want = "a positive number"
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            want = "a positive int"
        if not ok:
            problems.append(f"config.{f.name} must be {want}, found {value!r} ({type(value).__name__})")
    if problems:
        raise CheckpointError(f"{source}: invalid config:\n  " + "\n  ".join(problems))
    config = ModelConfig.from_dict(raw)
    if config.emb_dim % config.n_heads:
        raise CheckpointError(f"{source}: config.emb_dim {config.emb_dim} is not divisible by "
                              f"config.n_heads {config.n_heads}")
    return config


def strip_wrapper_prefixes(state: dict, source: str | Path = "state dict") -> dict:
    """Drop ``_orig_mod.`` (torch.compile) and ``module.`` (DataParallel) key prefixes."""
    out: dict = {}
    for key, value in state.items():
        name = str(key)
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name in out:
            raise CheckpointError(f"{source}: state-dict key {name!r} appears twice "
                                  "(with and without a wrapper prefix)")
        out[name] = value
    return out


def _shape(t: torch.Tensor | torch.Size) -> str:
    return str(list(t.shape if isinstance(t, torch.Tensor) else t))


def _hints(config: ModelConfig, missing: list[str], unexpected: list[str]) -> list[str]:
    hints = []
    if any(k.startswith(("transformer.", "h.0.", "wte.")) for k in unexpected):
        hints.append("these look like Hugging Face GPT-2 weights: load the folder holding them and "
                     "their config.json instead")
    if not config.qkv_bias and any(k.endswith(("W_query.bias", "W_key.bias")) for k in unexpected):
        hints.append("the weights have query/key/value biases: set qkv_bias to true in the config")
    if config.qkv_bias and any(k.endswith(("W_query.bias", "W_key.bias")) for k in missing):
        hints.append("the weights have no query/key/value biases: set qkv_bias to false in the config")
    return hints


def build_model(config: ModelConfig, state: Any, source: str | Path) -> GPTModel:
    """A GPTModel (float32, CPU, eval mode) holding ``state``, or one CheckpointError naming
    every missing, unexpected, mistyped or mis-shaped key."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: 'model_state_dict' must be a dict of tensors, "
                              f"found {type(state).__name__}")
    state = strip_wrapper_prefixes(state, source)
    with torch.device("meta"):
        model = GPTModel(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: v for k, v in state.items() if not _IGNORED_KEYS.fullmatch(k)}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    lines = [f"missing key {k} (expected shape {_shape(expected[k])})" for k in missing]
    lines += [f"unexpected key {k}" + (f" (shape {_shape(v)})" if isinstance(v, torch.Tensor) else "")
              for k, v in found.items() if k in unexpected]
    for k, v in found.items():
        if k not in expected:
            continue
        if not isinstance(v, torch.Tensor):
            lines.append(f"key {k}: expected a tensor of shape {_shape(expected[k])}, "
                         f"found {type(v).__name__}")
        elif v.shape != expected[k]:
            lines.append(f"shape mismatch for {k}: expected {_shape(expected[k])}, found {_shape(v)}")
        elif not v.is_floating_point():
            lines.append(f"key {k}: expected floating-point weights, found {v.dtype}")
    if lines:
        summary = ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
        hints = _hints(config, missing, unexpected)
        raise CheckpointError(
            f"{source}: the weights do not fit the model its config describes ({summary}):\n  "
            + "\n  ".join(lines) + "".join(f"\nhint: {h}" for h in hints)
        )
    # float16/bfloat16 weights become float32; assign=True skips a wasted random initialisation.
    model.load_state_dict({k: found[k].to(torch.float32) for k in expected}, strict=True, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        raise RuntimeError("GPTModel has tensors that are not in its state dict; load_checkpoint "
                           "needs updating")  # a non-persistent buffer was added to GPTModel
    return model.eval()


def _number(raw: dict, key: str, kind: type, source: Path) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise CheckpointError(f"{source}: '{key}' must be {'an int' if kind is int else 'a number'}, "
                              f"found {value!r}")
    return kind(value)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[GPTModel, CheckpointInfo]:
    """The model (float32, eval mode, on ``device``) and its metadata.

    ``path``: a .pt file, a Hugging Face GPT-2 folder, or ``"demo"``.
    """
    path = resolve_checkpoint_path(path)
    target = resolve_device(device)
    if path.is_dir():
        from samplekit.model import hf_gpt2  # imports this module, so only on demand

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
        raise CheckpointError(f"{path}: the checkpoint has no {', '.join(repr(k) for k in absent)} "
                              f"(keys found: {', '.join(map(str, raw)) or 'none'})")
    config = _check_config(raw["config"], path)
    tokenizer = raw.get("tokenizer")
    if isinstance(tokenizer, str):
        tokenizer = {"name": tokenizer}
    if tokenizer is not None and not isinstance(tokenizer, dict):
        raise CheckpointError(f"{path}: 'tokenizer' must be a dict like {{'name': 'gpt2'}}, "
                              f"found {type(tokenizer).__name__}")
    info = CheckpointInfo(
        path=path, config=config,
        epoch=_number(raw, "epoch", int, path),
        train_loss=_number(raw, "train_loss", float, path),
        val_loss=_number(raw, "val_loss", float, path),
        tokenizer=tokenizer,
        extra={k: v for k, v in raw.items() if k not in KNOWN_KEYS},
        num_parameters=0,
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
