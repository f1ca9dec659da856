"""Memory a call needs: the process's peak resident memory during it, measured with the kernel's
high-water mark (Linux: /proc/self/clear_refs resets VmHWM, /proc/self/status reads it).

Timing wants the opposite: `steady_allocator()` lets glibc keep freed memory and hand it out again
(no mmap for any size, and no trimming), as a long-running process or a caching allocator would, so
that no implementation's time includes the page faults of buffers that a fresh mmap hands out zeroed
on every call (a 50 MiB output costs more in page faults than its convolution on a 2-core VM). glibc
coalesces freed chunks lazily, so the first few rounds may still take fresh pages; the best of the
timing rounds is the settled state. timing.measure_interleaved counts each best round's page faults
(faults_in_best), and the reports name the calls that took them.

Why "never" and not a large threshold: mallopt takes an int, so a threshold stops at 2 GiB - 1. With
the trim threshold there, torch's conv7 at batch 128 (two 1.6 GB buffers, freed together) left more
than 2 GiB free at the top of the heap, glibc gave it back to the OS (brk shrank by 3.3 GB, seen with
strace), and the next call faulted 380,000 pages in anew: 0.6-0.7 s a call instead of 0.3 s, in every
round interleaved with im2win and torch_cl. M_TRIM_THRESHOLD -1 turns trimming off and M_MMAP_MAX 0
turns mmap off (both as mallopt(3) documents), for blocks of any size.
Blocks allocated aligned (posix_memalign, as PyTorch allocates) may still take a few rounds to
settle: glibc gives the slack around an aligned block back to its per-thread cache, where it does not
coalesce, so the next block of the same size may not fit the hole the last one left (seen with one
2.25 GiB tensor allocated and freed in a loop: faulted anew 1-4 times, then reused).

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

MEMORY_CALLS = 3  # calls a measurement takes the median of
METHOD = (
    "peak resident set (VmHWM after resetting it through /proc/self/clear_refs) during a call "
    f"minus the resident set before it, the median of {MEMORY_CALLS} calls (other memory the "
    "process frees or takes during one call moves that call's figure); glibc set to mmap every "
    "allocation >= 64 KiB (M_MMAP_THRESHOLD) and free heap pages returned to the OS (malloc_trim) "
    "before each call, so buffers freed by earlier calls are not silently reused; "
    "extra_mem_bytes = that increase minus the output tensor's bytes"
)
STEADY_METHOD = (
    "glibc mallopt: M_MMAP_MAX 0 (no mmap for any size), M_TRIM_THRESHOLD -1 (the heap never "
    "shrinks), M_TOP_PAD 256 MiB: freed buffers are kept and, once the heap has settled, reused "
    "instead of being unmapped and faulted in anew"
)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_DEFAULT_MMAP_MAX = 65536  # glibc's M_MMAP_MAX default
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
    codes = {
        "mmap": _M_MMAP_THRESHOLD,
        "mmap_max": _M_MMAP_MAX,
        "trim": _M_TRIM_THRESHOLD,
        "top_pad": _M_TOP_PAD,
    }
    return all(bool(libc.mallopt(codes[k], ctypes.c_int(v))) for k, v in settings.items())


def steady_allocator() -> bool:
    """Let freed memory be reused without page faults, for timing (glibc only; process-wide until
    exact_large_allocations). Returns whether it took effect."""
    return _mallopt(mmap_max=0, trim=-1, top_pad=256 << 20)


def exact_large_allocations() -> bool:
    """Make every allocation >= 64 KiB a fresh mmap (glibc only). Returns whether it took effect."""
    return _mallopt(mmap_max=_DEFAULT_MMAP_MAX, mmap=64 * 1024, trim=128 * 1024, top_pad=128 * 1024)


def release_free() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim; nothing elsewhere): between
    layers while timing, so that what steady_allocator keeps is one layer's, not every layer's."""
    if _libc() is not None:
        _libc().malloc_trim(0)


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {_STATUS}")


def median_peak_increase_bytes(
    fn: Callable[[], object], calls: int = MEMORY_CALLS
) -> tuple[int, list[int], object]:
    """(the median of `calls` calls' peak_increase_bytes, each call's, the last call's result):
    one call's figure moves with whatever else the process frees or takes meanwhile (seen: an
    im2col buffer measured 3% under its own size in one run of several)."""
    increases, result = [], None
    for _ in range(calls):
        increase, result = peak_increase_bytes(fn)
        increases.append(increase)
    return sorted(increases)[len(increases) // 2], increases, result


def peak_increase_bytes(fn: Callable[[], object]) -> tuple[int, object]:
    """(bytes by which the resident set peaked above its starting level during fn(), fn's result)."""
    gc.collect()
    release_free()  # so that reusing freed pages shows as an increase
    _CLEAR_REFS.write_text("5")
    before = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    return (peak - before) * 1024, result
