"""Read weight files without running their code.

PyTorch files load with ``torch.load(weights_only=True)``: a pickle that would import or call
Python objects is refused, and nothing in it runs. safetensors files are read by the
``safetensors`` library, which checks the header (JSON types, shapes, offsets, overflow) before
reading any data. Every failure is one CheckpointError line naming the file.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from samplekit.errors import CheckpointError
from samplekit.messages import one_line

# Sentences of torch's messages that give advice samplekit does not (re-run with
# weights_only=False, allowlist globals) or only point at its documentation.
_ADVICE = re.compile(r"weights.only|trust|safe_globals|documentation|file an issue|two options|"
                     r"PyTorch 2\.6", re.IGNORECASE)
_CODE = re.compile(r"GLOBAL|REDUCE|BUILD|NEWOBJ|\bINST\b|\bOBJ\b|instantiat|__reduce|\bclass\b",
                   re.IGNORECASE)


def torch_detail(text: str) -> str:
    """torch's error text without its advice, on one line."""
    kept = []
    for sentence in re.split(r"(?<=\.)\s+|\n", str(text)):
        sentence = re.sub(r"\x1b\[[0-9;]*m|\(\d\)|WeightsUnpickler error:", "", sentence).strip()
        if sentence and not _ADVICE.search(sentence):
            kept.append(sentence)
    return one_line(" ".join(kept), 160)


def refusal(path: Path, text: str) -> str:
    """The one-line message for a pickle that ``weights_only=True`` loading refused."""
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found or _CODE.search(text):
        culprit = f" ({found.group(1)})" if found else ""
        return (f"{path}: samplekit refuses this checkpoint: it holds Python objects{culprit} that "
                "would run code on load")
    detail = torch_detail(text) or "no detail"
    return (f"{path} is not a readable PyTorch checkpoint (unpickling stopped: {detail}); samplekit "
            "loads only plain data: tensors, numbers, strings, lists and dicts")


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on the CPU; a refusal or a bad file is a CheckpointError."""
    path = Path(path)
    if not path.is_file():  # a FIFO or a device would block or never end
        raise CheckpointError(f"{path}: not a regular file; a checkpoint is a file written by torch.save")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle protocol, beta sparse layouts
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(refusal(path, str(exc))) from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... for a bad file
        detail = torch_detail(str(exc)) or "no detail"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint "
                              f"({type(exc).__name__}: {detail})") from None


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor of a .safetensors file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file; expected a .safetensors file")
    try:
        return load_file(path, device="cpu")
    except BaseException as exc:  # SafetensorError, OSError, and pyo3's PanicException (a BaseException)
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CheckpointError(f"{path}: not a valid safetensors file ({one_line(why, 200)})") from None
