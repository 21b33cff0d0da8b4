"""The precision a model computes in (``--dtype``) and an optionally compiled forward (``--compile``).

``set_precision(model, "bfloat16")`` converts the weights (and so the KV cache and the arithmetic)
of a GPTModel or a Hugging Face model; the logits stay float32 (GPTModel and samplekit.hf's model
upcast them), so the chain samples in float32 whatever the dtype. ``"auto"`` keeps a Hugging Face
model's saved dtype (its config's ``torch_dtype``) and leaves a GPTModel as it is.

On the CPU, decoding at batch 1 reads every weight once per token, so halving the bytes is what
speeds it up, provided the product of one row reads them fast: ``linear`` multiplies one row by a
half-precision weight with ``addmv`` (1.2-1.5x faster than ``F.linear`` at GPT-2-small's shapes,
2.3x at its 50,257-wide head), which GPTModel uses and ``set_precision`` gives every ``nn.Linear``
of another model (a Hugging Face model's) and every transformers ``Conv1D`` (Hugging Face GPT-2's
layers, which keep a transposed copy of their weight for it: for GPT-2-small 418 MB in all
against 248 MB for the half-precision model alone, still less than float32's 496 MB).

Half precision changes the logits: a few greedy tokens differ from float32's (``samplekit bench
--workload precision`` measures the agreement on the demo model's held-out text: float16 keeps
more of float32's tokens than bfloat16).

``compile=True`` wraps the model's forward in ``torch.compile`` (dynamic shapes). The first calls
compile (seconds to minutes on a small CPU: the warm-up cost), and on a CPU where the forward is
bound by reading the weights it may gain nothing: ``samplekit bench --workload precision
--option compile=yes`` measures both.
"""

from __future__ import annotations

from typing import Any

import functools

import torch
from torch.nn import functional as F

from samplekit.errors import SampleKitError

__all__ = ["DTYPES", "PrecisionError", "compile_forward", "linear", "load_dtype", "model_dtype", "parse_dtype",
           "saved_dtype", "set_precision", "single_row"]

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None, "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


# Weights for which one row's product runs as a matrix-vector product (float32 gains nothing).
VECTOR_DTYPES = (torch.bfloat16, torch.float16)


def single_row(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``x @ weight.T`` is one row on the CPU in half precision: decoding at batch 1."""
    return weight.dtype in VECTOR_DTYPES and x.numel() == x.shape[-1] and weight.device.type == "cpu"


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; one half-precision row on the CPU as ``addmv`` (faster there)."""
    if single_row(x, weight):
        row = x.reshape(-1)
        out = torch.mv(weight, row) if bias is None else torch.addmv(bias, weight, row)
        return out.view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight, bias)


class PrecisionError(SampleKitError, ValueError):
    """A dtype name is unknown."""


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """The torch dtype a name gives (``"bf16"`` -> ``torch.bfloat16``); None for ``"auto"`` or None.

    >>> parse_dtype("bf16")
    torch.bfloat16
    """
    if name is None or isinstance(name, torch.dtype):
        return name
    key = str(name).strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise PrecisionError(f"unknown dtype {name!r}: use float32, bfloat16, float16 or auto "
                             "(also fp32, bf16, fp16, half)")
    return DTYPES[key]


def load_dtype(name: str | torch.dtype | None) -> torch.dtype | str | None:
    """What a loader takes for ``name``: a torch dtype, ``"auto"`` (the saved dtype), or None."""
    if isinstance(name, str) and name.strip().lower() == "auto":
        return "auto"
    return parse_dtype(name)


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def saved_dtype(model: Any) -> torch.dtype | None:
    """A Hugging Face model's saved dtype (its config's ``torch_dtype`` or ``dtype``), else None."""
    inner = getattr(model, "model", model)
    config = getattr(inner, "config", None)
    for key in ("torch_dtype", "dtype"):
        value = getattr(config, key, None)
        if isinstance(value, torch.dtype):
            return value
        if isinstance(value, str) and value.removeprefix("torch.") in DTYPES:
            return DTYPES[value.removeprefix("torch.")]
    return None


def set_precision(model: Any, dtype: str | torch.dtype | None = None, *, compile: bool = False) -> Any:
    """``model`` with its weights in ``dtype`` (a name or a torch dtype; None: as they are;
    ``"auto"``: a Hugging Face model's saved dtype) and, with ``compile``, its forward compiled.
    Returns the model (converted in place, as ``nn.Module.to`` does)."""
    wanted = parse_dtype(dtype)
    if wanted is None and isinstance(dtype, str) and dtype.strip().lower() == "auto":
        wanted = saved_dtype(model)
    if wanted is not None and isinstance(model, torch.nn.Module) and model_dtype(model) != wanted:
        model.to(wanted)
    if wanted in VECTOR_DTYPES and isinstance(model, torch.nn.Module):
        _rows_as_vectors(model)
    if compile:
        compile_forward(model)
    return model


def _rows_as_vectors(model: torch.nn.Module) -> None:
    """Every ``nn.Linear`` of ``model`` computes one row with ``linear`` (GPTModel already does),
    and so does every transformers ``Conv1D`` (GPT-2's ``x @ W`` layers), with a ``[out, in]`` copy
    of its weight made on first use and remade when the weight changes."""
    for module in model.modules():
        if "forward" in module.__dict__:
            continue
        if type(module) is torch.nn.Linear:
            module.forward = functools.partial(_linear_forward, module)
        elif type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers."):
            module.forward = functools.partial(_conv1d_forward, module, module.forward, {})


def _linear_forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, module.weight, module.bias)


def _conv1d_forward(module: torch.nn.Module, forward, copies: dict, x: torch.Tensor) -> torch.Tensor:
    weight = module.weight  # [in, out]: y = x @ W + b
    if not single_row(x, weight):
        return forward(x)
    key = (weight.data_ptr(), weight.dtype, _version(weight))
    if copies.get("key") != key:
        copies["key"], copies["weight"] = key, weight.detach().t().contiguous()
    return linear(x, copies["weight"], module.bias)


def _version(t: torch.Tensor) -> int | None:
    """``t``'s in-place change counter; None for an inference tensor (made under
    ``torch.inference_mode``), which keeps none: such a weight is taken as it was first seen."""
    try:
        return t._version
    except RuntimeError:
        return None


def compile_forward(model: torch.nn.Module) -> torch.nn.Module:
    """Compile ``model``'s forward in place with ``torch.compile(dynamic=True)`` (the model's own
    ``nn.Module.compile``); its first calls pay the compilation."""
    if not isinstance(model, torch.nn.Module):
        raise PrecisionError(f"--compile needs a torch model; got {type(model).__name__}")
    model.compile(dynamic=True)
    return model
