"""Giving the OS back what reading a large checkpoint freed.

Opening a checkpoint of a million revocations allocates and frees about 150 MB of
temporaries: its text, the decoded payload, a million jti strings. glibc keeps most of that
in its heap, counted in the service's RSS: freeing the first large buffers raises its mmap
threshold (later ones come from the heap) and the threshold past which it trims the heap's
top. ``malloc_trim(0)`` hands the free pages back; at a million revocations it takes the
agent's RSS from about 72 to about 44 bytes per revocation (``bench/revocations.py``). Other
C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

__all__ = ["LARGE", "release_freed"]

LARGE = 4 << 20
"""Checkpoints shorter than this (about 100,000 revocations) leave little to give back."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only once a large checkpoint was read: most agents never need it

    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process' own C library: glibc has it
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed(length: int) -> None:
    """After a checkpoint of ``length`` characters was read and its temporaries dropped."""
    if length < LARGE:
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
