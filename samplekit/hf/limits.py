"""Bounds on a Hugging Face model folder, checked before transformers reads or allocates anything.

- Files: every file transformers would read is a regular file (a FIFO would block, a device never
  end) and the JSON and tokenizer files are at most ``FILE_LIMITS`` bytes.
- Dimensions: each size in ``config.json`` (and its ``text_config``) that ``DIMENSIONS`` names is
  an integer in its range (or a list of them, one per layer), or null (transformers' default).
- Memory: the parameters of the config, counted on the meta device (nothing allocated), times
  the bytes of the dtype they load in, fit the memory available on the target device.

Every refusal is a ``CheckpointError`` naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from samplekit.errors import CheckpointError
from samplekit.messages import short_repr
from samplekit.safe_io import MiB, describe_size

GiB = 1 << 30
JSON_LIMIT = MiB  # config.json, generation_config.json: as --checkpoint's config.json
FILE_LIMITS = {
    "config.json": JSON_LIMIT,
    "generation_config.json": JSON_LIMIT,
    "tokenizer_config.json": 16 * MiB,  # chat templates and added tokens make it larger
    "special_tokens_map.json": 16 * MiB,
    "added_tokens.json": 64 * MiB,
    "chat_template.jinja": 16 * MiB,
    "chat_template.json": 16 * MiB,
    "model.safetensors.index.json": 64 * MiB,
    "pytorch_model.bin.index.json": 64 * MiB,
    "tokenizer.json": 256 * MiB,
    "vocab.json": 256 * MiB,
    "vocab.txt": 256 * MiB,
    "merges.txt": 256 * MiB,
    "tokenizer.model": 256 * MiB,
    "spiece.model": 256 * MiB,
}
WEIGHT_SUFFIXES = (".safetensors", ".bin")  # no size bound: checked against memory instead
DIMENSIONS: dict[str, tuple[tuple[str, ...], int]] = {  # what: (config keys, the largest allowed)
    "layers": (("n_layer", "num_hidden_layers", "num_layers", "n_layers"), 1024),
    "heads": (("n_head", "num_attention_heads", "num_key_value_heads", "num_heads", "n_head_kv"), 4096),
    "width": (("n_embd", "hidden_size", "d_model", "n_inner", "intermediate_size", "ffn_dim", "head_dim",
               "kv_channels", "moe_intermediate_size"), 1 << 20),
    "vocabulary": (("vocab_size",), 1 << 24),
    "context": (("n_positions", "n_ctx", "max_position_embeddings", "seq_length", "max_sequence_length"), 1 << 26),
    "experts": (("num_experts", "num_local_experts", "n_routed_experts"), 1 << 16),
}
MAX_LIST = 4096  # entries of a size given per layer
DTYPE_BYTES = {"float32": 4, "float": 4, "fp32": 4, "float16": 2, "half": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
               "float64": 8, "int8": 1}


def check_files(folder: Path) -> None:
    """Every file of ``folder`` that transformers may read is a regular file within its bound."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise CheckpointError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    for entry in entries:
        name = entry.name
        limit = FILE_LIMITS.get(name)
        if limit is None and not name.endswith(WEIGHT_SUFFIXES):
            continue
        path = Path(folder) / name
        try:
            info = os.stat(path)  # follows links, as transformers does (the hub cache links to blobs)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{path}: not a regular file (a FIFO, device or folder); a model folder "
                                  "holds plain files")
        if limit is not None and info.st_size > limit:
            raise CheckpointError(f"{path}: the file is {describe_size(info.st_size)}; the limit is "
                                  f"{describe_size(limit)}")


def check_dimensions(raw: dict, source: Path) -> None:
    """Each size in ``raw`` (config.json) and its ``text_config`` is null, an int in [1, its
    bound], or a list of such ints (one per layer, as some architectures write them)."""
    parts = [("", raw)]
    if isinstance(raw.get("text_config"), dict):
        parts.append(("text_config.", raw["text_config"]))
    for prefix, part in parts:
        for what, (keys, high) in DIMENSIONS.items():
            for key in keys:
                value = part.get(key)
                values = value if isinstance(value, list) and 0 < len(value) <= MAX_LIST else [value]
                if value is not None and not all(_size(v, high) for v in values):
                    raise CheckpointError(f"{source}: {prefix}{key} is {short_repr(value)}; expected an integer "
                                          f"from 1 to {high:,} (the model's {what})")


def _size(value, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high


def load_bytes_per_parameter(raw: dict, dtype, device: torch.device) -> int:
    """Bytes of one parameter once loaded, as samplekit.hf.load loads it: ``dtype`` (a torch dtype
    or its name) if given; ``"auto"``: the saved one (config.json's ``dtype`` or ``torch_dtype``;
    float32 when it names none); None: float32 on the CPU, the saved one elsewhere. A name this
    table does not know counts 4 bytes."""
    if dtype is None:
        dtype = "float32" if device.type == "cpu" else "auto"
    if isinstance(dtype, torch.dtype):
        return dtype.itemsize
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name == "auto":
        name = str(raw.get("dtype") or raw.get("torch_dtype") or "float32").removeprefix("torch.")
    return DTYPE_BYTES.get(name, 4)


def meta_skeleton(transformers, folder: Path, trust_remote_code: bool):
    """(config, model) of ``config.json``, the model built on the meta device (no memory); a
    config transformers refuses (a value of the wrong type, sizes that do not fit together) is
    one CheckpointError."""
    from samplekit.hf.quiet import quiet_transformers

    try:
        with quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code,
                                                             local_files_only=True)
            with torch.device("meta"):
                skeleton = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - a config transformers cannot build a model of: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{folder / 'config.json'}: transformers cannot build a model of this config "
                              f"({type(exc).__name__}: {first[:300]})") from None
    return config, skeleton


def count_parameters(transformers, folder: Path, trust_remote_code: bool) -> int:
    """The parameters of the model ``config.json`` describes (counted on the meta device)."""
    _, skeleton = meta_skeleton(transformers, folder, trust_remote_code)
    return sum(p.numel() for p in skeleton.parameters())


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (CUDA: the GPU's; otherwise the machine's available memory);
    None when unknown."""
    if device.type == "cuda":
        try:
            return torch.cuda.mem_get_info(device)[0]
        except Exception:  # noqa: BLE001 - no driver answer: unknown
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(parameters: int, per_parameter: int, device: torch.device, source: Path) -> None:
    """Refuse a model whose parameters alone need more than the memory ``device`` has free."""
    need = parameters * per_parameter
    free = available_memory(device)
    if free is not None and need > free:
        raise CheckpointError(f"{source}: the config describes {parameters:,} parameters ({need / GiB:.1f} GiB "
                              f"at {per_parameter} bytes each), more than the {free / GiB:.1f} GiB of memory "
                              f"free on {device}; is the config.json this model's?")

