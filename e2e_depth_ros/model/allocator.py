"""Process-wide allocator tuning for processes that run inference; never called by the library.

The node's and the command-line tools' ``main`` opt in; a program that imports the estimator
keeps its own allocator settings.
"""

from __future__ import annotations

import ctypes
import sys


def keep_cpu_buffers_mapped() -> bool:
    """Stop glibc from unmapping and re-faulting large activation buffers on every call.

    CPU inference allocates and frees hundreds of MB per frame; with glibc's defaults each
    buffer goes back to the OS and is page-faulted in again next time, which cost ~10x the
    system time and most of the gain of sharing the VAE encode. Process-wide (freed memory
    stays reserved for the next frame), so the library never calls it: the node's and the
    command-line tools' ``main`` opt in. Returns whether it applied (Linux glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum: 32 MiB on 64-bit
    ok &= mallopt(m_trim_threshold, 2**31 - 1)
    ok &= mallopt(m_top_pad, 1 << 30)
    return bool(ok)
