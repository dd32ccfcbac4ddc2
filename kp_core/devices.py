"""Choosing the torch device from a user's string ("auto", "cpu", "cuda", "cuda:1", ...)."""

from __future__ import annotations

import torch


def resolve_device(name: str | None) -> torch.device:
    """``"auto"`` (or empty) picks CUDA when available, else the CPU; other names are checked.

    Raises:
        ValueError: an unknown device name, or CUDA asked for where there is none.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"invalid device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
