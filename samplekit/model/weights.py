"""A GPTModel from a config and a state dict, checked before anything is allocated.

Order: the config's values (types, ranges, finite), then its sizes against the tensors the file
really holds (vocab_size, emb_dim, context_length from the embeddings and head, n_layers from the
layer keys), then every key's shape and kind on a model built on the meta device, and only then
the weights themselves. A config that cannot describe the file is one CheckpointError line.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, fields
from typing import Any

import torch

from samplekit.errors import CheckpointError
from samplekit.messages import short_repr as short
from samplekit.model.gpt import GPTModel, ModelConfig

WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DataParallel / DDP
# The usage guide's attention keeps its causal mask as a buffer; GPTModel builds the mask itself.
IGNORED_KEYS = re.compile(r"trf_blocks\.\d+\.att\.mask")


@dataclass(frozen=True)
class Layout:
    """Where a state dict keeps the tensors that fix a config's sizes, and what the config calls
    each size in messages."""

    embedding: str  # [vocab_size, emb_dim]
    positions: str  # [context_length, emb_dim]
    head: str  # [vocab_size, emb_dim]
    layer: str  # regex whose group 1 is a layer index
    names: tuple[tuple[str, str], ...]  # ModelConfig field -> its name in messages

    def name(self, field: str) -> str:
        return dict(self.names).get(field, f"config.{field}")


GPT_LAYOUT = Layout("tok_emb.weight", "pos_emb.weight", "out_head.weight", r"trf_blocks\.(\d{1,9})\.", ())


def join_problems(problems: list[str], limit: int = 6) -> str:
    """The first ``limit`` problems joined by "; ", then how many more there are."""
    more = len(problems) - limit
    return "; ".join(problems[:limit]) + (f"; and {more} more" if more > 0 else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def finite_number(value: Any) -> bool:
    """An int or float that is a finite float (not inf, NaN, nor an int too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_config(raw: Any, source: object) -> ModelConfig:
    """The ModelConfig of a checkpoint's ``config`` dict; every bad value named on one line."""
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
            ok, want = finite_number(value) and 0 <= value <= 1, "a number from 0 to 1"
        elif f.name == "layer_norm_eps":
            ok, want = finite_number(value) and value > 0, "a finite positive number"
        else:
            ok, want = _is_int(value) and value > 0, "a positive int"
        if not ok:
            problems.append(f"config.{f.name} must be {want}, found {short(value)} ({type(value).__name__})")
    if problems:
        raise CheckpointError(f"{source}: invalid config: " + join_problems(problems))
    config = ModelConfig.from_dict(raw)
    if config.emb_dim % config.n_heads:
        raise CheckpointError(f"{source}: config.emb_dim {config.emb_dim} is not divisible by "
                              f"config.n_heads {config.n_heads}")
    return config


def strip_wrapper_prefixes(state: dict, source: object = "state dict") -> dict:
    """Drop ``_orig_mod.`` (torch.compile) and ``module.`` (DataParallel) key prefixes."""
    out: dict = {}
    for key, value in state.items():
        name = str(key)
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name in out:
            raise CheckpointError(f"{source}: state-dict key {short(name)} appears twice "
                                  "(with and without a wrapper prefix)")
        out[name] = value
    return out


def _shape(t: torch.Tensor | torch.Size) -> str:
    return str(list(t.shape if isinstance(t, torch.Tensor) else t))


def _layers(indices: set[int]) -> str:
    if not indices:
        return "no layers"
    lo, hi = min(indices), max(indices)
    if len(indices) == hi - lo + 1:
        return f"{len(indices)} layers ({lo} to {hi})" if hi > lo else f"1 layer ({lo})"
    return f"{len(indices)} layers (indices from {lo} to {hi}, with gaps)"


def check_dimensions(config: ModelConfig, state: dict, source: object, layout: Layout = GPT_LAYOUT) -> None:
    """Refuse a config whose sizes differ from the state dict's own tensors, before a model of
    that config exists: n_layers against the layer keys; vocab_size, emb_dim and context_length
    against the embeddings and the head (when present; absent keys are reported later)."""
    problems: list[str] = []
    checked: set[str] = set()
    for key, axes in ((layout.embedding, ("vocab_size", "emb_dim")),
                      (layout.positions, ("context_length", "emb_dim")),
                      (layout.head, ("vocab_size", "emb_dim"))):
        tensor = state.get(key)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
            continue
        for axis, field in enumerate(axes):
            want = getattr(config, field)
            if field not in checked and tensor.shape[axis] != want:
                problems.append(f"{layout.name(field)} is {short(want)}, but {key} has shape "
                                f"{_shape(tensor)}: it must be {tensor.shape[axis]}")
                checked.add(field)
    indices: set[int] = set()
    for key in state:
        found = re.match(layout.layer, str(key))
        if found:
            indices.add(int(found.group(1)))
    n = config.n_layers
    if not (len(indices) == n and min(indices, default=0) == 0 and max(indices, default=-1) == n - 1):
        problems.append(f"{layout.name('n_layers')} is {short(n)}, but the weights hold {_layers(indices)}")
    if problems:
        raise CheckpointError(f"{source}: the config does not describe these weights: "
                              + join_problems(problems))


def tensor_problem(key: str, value: Any, shape: torch.Size | tuple[int, ...]) -> str | None:
    """Why ``value`` cannot be the weight ``key`` of shape ``shape``, or None when it can."""
    if not isinstance(value, torch.Tensor):
        return f"key {key}: expected a tensor of shape {_shape(torch.Size(shape))}, found {type(value).__name__}"
    if value.is_meta:
        return f"key {key} is a meta tensor, which holds no data"
    if value.layout != torch.strided:
        return f"key {key} is a {str(value.layout).removeprefix('torch.')} tensor; weights must be dense"
    if tuple(value.shape) != tuple(shape):
        return f"shape mismatch for {key}: expected {_shape(torch.Size(shape))}, found {_shape(value)}"
    if not value.is_floating_point():
        return f"key {key}: expected floating-point weights, found {value.dtype}"
    return None


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


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Random initialisation of meta tensors fills nothing: skip it. (torch runs random ops on
    the meta device through Python references whose first use imports torch._dynamo: seconds.)"""

    SKIPPED = frozenset({
        torch.nn.init.normal_, torch.nn.init.uniform_, torch.nn.init.trunc_normal_,
        torch.nn.init.kaiming_uniform_, torch.nn.init.kaiming_normal_,
        torch.nn.init.xavier_uniform_, torch.nn.init.xavier_normal_,
        torch.Tensor.normal_, torch.Tensor.uniform_,
    })

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.SKIPPED:
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


def skeleton(config: ModelConfig) -> GPTModel:
    """A GPTModel of ``config`` on the meta device: its parameters' shapes, no storage, no init."""
    with torch.device("meta"), _SkipInit():
        return GPTModel(config)


def build_model(config: ModelConfig, state: Any, source: object) -> GPTModel:
    """A GPTModel (float32, CPU, eval mode) holding ``state``, or one CheckpointError line naming
    the missing, unexpected, mistyped or mis-shaped keys."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: 'model_state_dict' must be a dict of tensors, "
                              f"found {type(state).__name__}")
    state = strip_wrapper_prefixes(state, source)
    found = {k: v for k, v in state.items() if not IGNORED_KEYS.fullmatch(k)}
    check_dimensions(config, found, source)
    try:
        model = skeleton(config)  # shapes only: nothing is allocated
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{source}: no model has this config ({short(exc, 120)})") from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    lines = [f"missing key {k} (expected shape {_shape(expected[k])})" for k in missing]
    lines += [f"unexpected key {short(k)}" + (f" (shape {_shape(v)})" if isinstance(v, torch.Tensor) else "")
              for k, v in found.items() if k in unexpected]
    lines += [p for k, v in found.items() if k in expected
              for p in [tensor_problem(k, v, expected[k])] if p]
    if lines:
        summary = ", ".join(f"{k}={v}" for k, v in config.to_dict().items())
        hints = "".join(f"; hint: {h}" for h in _hints(config, missing, unexpected))
        raise CheckpointError(f"{source}: the weights do not fit the model its config describes "
                              f"({summary}): {join_problems(lines)}{hints}")
    # float16/bfloat16 weights become float32; assign=True skips a wasted random initialisation.
    model.load_state_dict({k: found[k].to(torch.float32) for k in expected}, strict=True, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        raise RuntimeError("GPTModel has tensors that are not in its state dict; build_model "
                           "needs updating")  # a non-persistent buffer was added to GPTModel
    return model.eval()
