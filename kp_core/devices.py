"""Choosing the torch device from a user's string ("auto", "cpu", "cuda", "cuda:1", ...), and what it computes fast."""

from __future__ import annotations

import os
import platform

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


BF16_INSTRUCTIONS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
"""``torch.cpu``'s checks for the instructions that compute in bf16 (AVX512-BF16, AMX); a torch without them
reports neither."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` is a CPU with native bf16 instructions (AVX512-BF16 or AMX), where bf16 convolutions run
    faster than float32 ones. oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also passes plain
    AVX-512, where bf16 is emulated and runs slower than float32 (``bench/bench_pipeline.py`` and
    ``bench/bench_train.py`` compare the two on a machine)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return any(getattr(torch.cpu, check, lambda: False)() for check in BF16_INSTRUCTIONS)


def cpu_description() -> str:
    """The CPU a figure is measured on, for a benchmark's first line: its model name (Linux's ``/proc/cpuinfo``,
    else the platform's), its cores, and whether it computes bf16 natively (:func:`native_bf16`). Timings differ
    several times between CPUs that ``os.cpu_count()`` alone cannot tell apart."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    bf16 = "native bf16" if native_bf16(torch.device("cpu")) else "no native bf16"
    return f"{name}, {os.cpu_count()} cores, {bf16}"
