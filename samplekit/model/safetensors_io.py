"""A small reader and writer for the safetensors format, so samplekit needs no extra dependency.

Layout: 8 bytes little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}``, then the raw little-endian data;
offsets count from the end of the header.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
from pathlib import Path

import torch

from samplekit.errors import CheckpointError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


def _bad(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a valid safetensors file: {why}")


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor (on the CPU) and the ``__metadata__`` dict of a .safetensors file."""
    path = Path(path)
    if sys.byteorder != "little":  # pragma: no cover - no big-endian machine to test on
        raise CheckpointError(f"{path}: reading safetensors needs a little-endian machine")
    try:
        data = bytearray(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) < 8:
        raise _bad(path, f"the file is {len(data)} bytes long, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise _bad(path, f"header length {n} does not fit in a file of {len(data)} bytes")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"the header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _bad(path, "the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    start, size = 8 + n, len(data) - 8 - n
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            allowed = ", ".join(DTYPES)
            raise _bad(path, f"tensor {name!r}: bad entry {entry!r} (dtypes allowed: {allowed})") from exc
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= size or end - begin != numel * itemsize or min(shape, default=0) < 0:
            raise _bad(path, f"tensor {name!r}: offsets [{begin}, {end}] do not hold shape {shape} "
                             f"of {entry['dtype']} within {size} data bytes")
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        offset = start + begin
        # frombuffer shares memory with `data`; copy first when the offset is not aligned.
        buf, offset = (data, offset) if offset % itemsize == 0 else (bytearray(data[offset:start + end]), 0)
        tensors[name] = torch.frombuffer(buf, dtype=dtype, count=numel, offset=offset).reshape(shape)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (any device; copied to the CPU) as a .safetensors file; returns the path."""
    path = Path(path)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs: list[torch.Tensor] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _NAMES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} is not supported by safetensors_io")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        blobs.append(t)
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in blobs:
            if t.numel():
                f.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    return path
