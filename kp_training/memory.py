"""The allocator setting of training (CPU steps allocate and free tens of MB each)."""

from __future__ import annotations


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in the process instead of unmapping it at every training step.

    A CPU training step allocates and frees tensors of tens of MB; glibc serves those with mmap and
    returns them to the system at once, so each step pays page faults and zeroing in the kernel (a large
    share of a CPU step, as a profile of ``kp-train`` shows). Serving them from the heap and never
    trimming it keeps the pages (PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for the same
    reason). Returns False where glibc's ``mallopt`` is not available (other C libraries, other systems).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
