"""Which model a job runs, loaded the way ``samplekit generate`` loads it, and its fingerprint.

``ModelSpec`` is plain data, so it travels to Ray workers, which load the model themselves.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from samplekit.errors import ConfigError

WEIGHT_NAMES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "tokenizer.json")


@dataclass(frozen=True)
class ModelSpec:
    """``checkpoint``: a .pt file, a Hugging Face GPT-2 folder or "demo" (``--checkpoint``);
    ``folder``: any Hugging Face causal LM folder (``--model``), run through transformers;
    ``dtype`` and ``compile``: ``--dtype`` and ``--compile`` (samplekit.model.precision), the
    name checked on construction (an unknown one is a PrecisionError, before anything loads)."""

    checkpoint: str = "demo"
    folder: str | None = None
    device: str = "auto"
    trust_remote_code: bool = False
    dtype: str | None = None
    compile: bool = False

    def __post_init__(self):
        if self.folder is not None and self.checkpoint != "demo":
            raise ConfigError(f"--model {self.folder!r} and --checkpoint {self.checkpoint!r}: give one of them")
        from samplekit.model.precision import parse_dtype

        parse_dtype(self.dtype)

    def load(self):
        """``(model, tokenizer)`` on the device (``auto``: cuda, then mps, then cpu), in ``dtype``
        (a ``--model`` folder loaded by transformers directly in it; ``auto``: its saved dtype)."""
        from samplekit.model.device import resolve_device
        from samplekit.model.precision import load_dtype, set_precision

        target = resolve_device(self.device)
        if self.folder is not None:
            if importlib.util.find_spec("samplekit.hf") is None:
                raise ConfigError("--model needs samplekit.hf (Hugging Face models), which this samplekit lacks; "
                                  "use --checkpoint for a .pt file or a GPT-2 folder")
            from samplekit.hf import load

            model, tokenizer = load(self.folder, device=target, trust_remote_code=self.trust_remote_code,
                                    dtype=load_dtype(self.dtype))
        else:
            from samplekit.model.checkpoint import load_checkpoint
            from samplekit.model.tokenizer import tokenizer_for_checkpoint

            model, info = load_checkpoint(self.checkpoint, target)
            tokenizer = tokenizer_for_checkpoint(info)
        return set_precision(model, self.dtype, compile=self.compile), tokenizer

    def fingerprint(self) -> dict:
        """What identifies the model's weights without reading them: the absolute path with each
        file's size and modification time (``demo``: the name and samplekit's version), and the
        ``dtype`` when one is given (its samples differ from float32's)."""
        dtype = {} if self.dtype is None else {"dtype": _dtype_name(self.dtype)}
        return {**self._weights(), **dtype}

    def _weights(self) -> dict:
        if self.folder is None and self.checkpoint == "demo":
            from samplekit import __version__

            return {"checkpoint": "demo", "samplekit": __version__}
        name = self.folder if self.folder is not None else self.checkpoint
        path = Path(name).expanduser()
        key = "model" if self.folder is not None else "checkpoint"
        try:
            path = path.resolve()
        except (OSError, RuntimeError, ValueError):
            return {key: str(name)}
        return {key: str(path), "files": _stats(path)}


def _dtype_name(name: str) -> str:
    """One name per dtype (``bf16`` and ``bfloat16`` give the same output): ``auto`` or torch's."""
    from samplekit.model.precision import parse_dtype

    dtype = parse_dtype(name)
    return "auto" if dtype is None else str(dtype).removeprefix("torch.")


def _stats(path: Path) -> dict:
    """``{name: [size, mtime_ns]}`` of the file, or of a folder's config and weight files."""
    files = [path] if not path.is_dir() else [path / n for n in WEIGHT_NAMES if (path / n).is_file()]
    out = {}
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        out[f.name] = [st.st_size, st.st_mtime_ns]
    return out
