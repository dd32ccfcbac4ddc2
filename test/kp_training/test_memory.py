"""The allocator setting of training."""

import pytest

from kp_training.memory import keep_freed_memory


def test_keep_freed_memory_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True
