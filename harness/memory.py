"""Memory a call needs: the process's peak resident memory during it, measured with the kernel's
high-water mark (Linux: /proc/self/clear_refs resets VmHWM, /proc/self/status reads it).

Timing wants the opposite: `steady_allocator()` lets glibc keep freed memory and hand it out again
(no mmap below 2 GiB, the most mallopt takes, and no trimming), as a long-running process or a
caching allocator would, so that no implementation's time includes the page faults of buffers that
a fresh mmap hands out zeroed on every call (a 50 MiB output costs more in page faults than its
convolution on a 2-core VM). glibc coalesces freed chunks lazily, so the first few rounds may still
take fresh pages; the best of the timing rounds is the settled state. Not for every block: on glibc
2.36, blocks of 1 GiB and more allocated 64-byte aligned (posix_memalign, as PyTorch allocates) were
faulted in anew on every call even so, and torch's conv7 at batch 128 (two 1.6 GB buffers) took
375,000-770,000 page faults a call in rounds with im2win and torch_cl. timing.measure_interleaved
counts each best round's page faults (faults_in_best), and the reports name the calls that took
them.

To make freed and re-allocated buffers visible, `exact_large_allocations()` asks glibc to serve every
allocation of 64 KiB or more with a fresh mmap and to unmap it on free (mallopt), so each call's
buffers are paged in anew and show in the high-water mark. Smaller allocations may reuse heap pages
and are not seen; that is below the resolution that matters for convolution workspaces.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable
from pathlib import Path

METHOD = (
    "peak resident set (VmHWM after resetting it through /proc/self/clear_refs) during one call "
    "minus the resident set before it; glibc set to mmap every allocation >= 64 KiB "
    "(M_MMAP_THRESHOLD) and free heap pages returned to the OS (malloc_trim) before each call, so "
    "buffers freed by earlier calls are not silently reused; "
    "extra_mem_bytes = that increase minus the output tensor's bytes"
)
STEADY_METHOD = (
    "glibc mallopt: M_MMAP_THRESHOLD and M_TRIM_THRESHOLD 2 GiB - 1 (the most mallopt takes), "
    "M_TOP_PAD 256 MiB: freed "
    "buffers are kept and, once the heap has settled, reused instead of being unmapped and "
    "faulted in anew"
)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
STEADY_REUSE_BYTES = (1 << 31) - 1  # steady_allocator's thresholds: the most mallopt takes (an int)
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def supported() -> bool:
    """Whether this OS lets a process reset and read its own memory high-water mark."""
    try:
        _CLEAR_REFS.write_text("5")
        return "VmHWM" in _STATUS.read_text()
    except OSError:
        return False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") else None  # glibc only


def _mallopt(**settings: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    codes = {"mmap": _M_MMAP_THRESHOLD, "trim": _M_TRIM_THRESHOLD, "top_pad": _M_TOP_PAD}
    return all(bool(libc.mallopt(codes[k], ctypes.c_int(v))) for k, v in settings.items())


def steady_allocator() -> bool:
    """Let freed memory be reused without page faults, for timing (glibc only; process-wide until
    exact_large_allocations). Returns whether it took effect."""
    return _mallopt(mmap=STEADY_REUSE_BYTES, trim=STEADY_REUSE_BYTES, top_pad=256 << 20)


def exact_large_allocations() -> bool:
    """Make every allocation >= 64 KiB a fresh mmap (glibc only). Returns whether it took effect."""
    return _mallopt(mmap=64 * 1024, trim=128 * 1024, top_pad=128 * 1024)


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {_STATUS}")


def peak_increase_bytes(fn: Callable[[], object]) -> tuple[int, object]:
    """(bytes by which the resident set peaked above its starting level during fn(), fn's result)."""
    gc.collect()
    if _libc() is not None:
        _libc().malloc_trim(0)  # hand free heap pages back, so reusing them shows as an increase
    _CLEAR_REFS.write_text("5")
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    return (peak - before) * 1024, result
