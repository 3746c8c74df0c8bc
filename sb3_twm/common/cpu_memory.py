"""
Keeping freed CPU memory in the process for reuse, on Linux with glibc.

glibc's ``malloc`` serves every block above its mmap threshold (32 MiB at most) with fresh ``mmap`` pages and hands them
back to the system when they are freed. A default world-model update allocates and frees gigabytes of such blocks
(activations of 1,600 frames), so every update pays the page faults and the kernel's zeroing of all of them again.
Inside :func:`reuse_freed_memory` allocations come from the heap and freed memory stays there for the next update, as
PyTorch's CUDA allocator keeps GPU memory. What is computed does not change.
"""

import contextlib
import ctypes
import platform
import threading
from collections.abc import Iterator

# mallopt parameters and glibc's defaults for them (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def is_supported() -> bool:
    """
    :return: Whether this process's allocator can be told to reuse freed memory (Linux with glibc).
    """
    return _glibc() is not None


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """
    While inside, glibc takes every allocation from the heap (no ``mmap``) and never trims it, so memory freed by one
    training update serves the next one without new page faults. On leaving the outermost such context the defaults
    return and free heap memory goes back to the system (``malloc_trim``). Nested and repeated use is safe; outside
    Linux/glibc, or with ``enabled=False``, it does nothing.

    The process keeps its peak memory of the work done inside until it leaves: the peak itself does not grow.

    :param enabled: Whether to change the allocator's behaviour at all.
    :return: A context that yields whether the allocator's behaviour was changed.
    """
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            # -1 converts to SIZE_MAX inside glibc: the heap is never trimmed.
            libc.mallopt(_M_TRIM_THRESHOLD, -1)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
