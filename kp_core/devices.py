"""Choosing the torch device from a user's string ("auto", "cpu", "cuda", "cuda:1", ...), and what it computes fast."""

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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU with native bf16 instructions (oneDNN's check: AVX512-BF16 or AMX), where bf16
    convolutions run faster than float32 ones."""
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
