"""Device names a user may type."""

import os

import pytest
import torch

from kp_core import devices
from kp_core.devices import cpu_description, native_bf16, resolve_device


def test_auto_and_cpu():
    assert resolve_device("auto") == resolve_device(None) == resolve_device("  AUTO ")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu0", "cuda:x", "tpu:"])
def test_unknown_names_are_refused_with_the_name(name):
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_bf16_is_native_only_with_its_instructions(monkeypatch, avx512_bf16, amx, expected):
    # AVX-512 alone passes oneDNN's bf16 check, but computes bf16 by emulation, slower than float32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert native_bf16(torch.device("cpu")) is expected
    assert native_bf16(torch.device("cuda")) is False


def test_a_torch_without_the_instruction_checks_computes_in_float32(monkeypatch):
    for check in devices.BF16_INSTRUCTIONS:
        monkeypatch.delattr(torch.cpu, check, raising=False)
    assert native_bf16(torch.device("cpu")) is False


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_is_described_with_its_cores_and_its_bf16(monkeypatch, native):
    monkeypatch.setattr(devices, "native_bf16", lambda device: native)
    text = cpu_description()
    assert text.endswith(f", {os.cpu_count()} cores, {'native bf16' if native else 'no native bf16'}")
    assert not text.startswith(",")  # a model name comes first
