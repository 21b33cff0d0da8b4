"""Turn a device name from a flag or config ("cpu", "cuda", "mps", "auto") into a torch.device."""

from __future__ import annotations

import torch

from samplekit.errors import SampleKitError

DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


class DeviceError(SampleKitError, ValueError):
    """A device name is unknown, or names a device this machine does not have."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The device names usable here, "cpu" first."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names.append("cuda")
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; ``"cuda:N"`` picks one GPU.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(name, torch.device):
        name = str(name)
    value = str(name).strip().lower()
    here = ", ".join(available_devices())
    if value == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    kind, _, index = value.partition(":")
    if kind not in DEVICE_NAMES[1:] or (index and (kind != "cuda" or not index.isdigit())):
        raise DeviceError(f"unknown device {name!r}: allowed are {', '.join(DEVICE_NAMES)} "
                          f"(or cuda:N); available here: {here}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} is not available: this PyTorch sees no CUDA GPU; "
                              f"available here: {here}")
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r} is not available: there are "
                              f"{torch.cuda.device_count()} CUDA GPUs (cuda:0 to "
                              f"cuda:{torch.cuda.device_count() - 1})")
    if kind == "mps" and not _mps_available():
        raise DeviceError(f"device {name!r} is not available on this machine; available here: {here}")
    return torch.device(value)
