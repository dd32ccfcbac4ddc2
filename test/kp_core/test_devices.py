"""Device names a user may type."""

import pytest
import torch

from kp_core.devices import resolve_device


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
