"""The CPU's measured FP32 peak: an FMA microbenchmark (harness/peak.cpp) compiled like the kernels.

Every GFLOP/s figure of a run can then also be given as a fraction of this machine's own limit.
And how far apart the threads' cores are (thread_round_trip_ns): on a VM or a many-chiplet CPU,
two threads may or may not share a last-level cache, and the kernels' shared data costs more when
they do not.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.native import load

SOURCE = Path(__file__).with_name("peak.cpp")
METHOD = (
    "independent chains of FP32 vector FMAs per thread (16 with AVX-512, 12 otherwise: as many "
    "as the vector registers hold; widest SIMD of -march={march}), "
    "all threads at once; best of {trials} trials of {iters} iterations; FLOPs = 2 per lane"
)


@dataclass(frozen=True)
class Peak:
    gflops: float
    threads: int
    simd_width: int
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


@functools.cache
def _lib(march: str = "native") -> ctypes.CDLL:
    lib = load(SOURCE, march)
    lib.peak_fma.restype = ctypes.c_double
    lib.peak_fma.argtypes = [
        ctypes.c_long,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_double),
        ctypes.POINTER(ctypes.c_float),
    ]
    lib.peak_simd_width.restype = ctypes.c_int
    lib.thread_round_trip_ns.restype = ctypes.c_double
    lib.thread_round_trip_ns.argtypes = [ctypes.c_long, ctypes.c_double]
    return lib


def measure_peak(
    threads: int, iters: int = 20_000_000, trials: int = 5, march: str = "native"
) -> Peak:
    """Best FP32 GFLOP/s of `trials` runs of the FMA probe on `threads` threads (~0.1 s each),
    built for -march=`march` (another x86 level: the peak of its vectors)."""
    lib = _lib(march)
    flops = ctypes.c_double()
    sink = (ctypes.c_float * threads)()
    best = 0.0
    for _ in range(trials):
        seconds = lib.peak_fma(iters, threads, ctypes.byref(flops), sink)
        best = max(best, flops.value / seconds / 1e9)
    method = METHOD.format(trials=trials, iters=iters, march=march)
    return Peak(best, threads, lib.peak_simd_width(), method)


ROUND_TRIP_METHOD = (
    "OpenMP threads 0 and 1 hand one cache line back and forth (an atomic counter) {trips} "
    "times; nanoseconds a round trip. About 100 ns: their cores share a last-level cache; several "
    "times that: they do not"
)


APART_NS = 250.0
"""A threads' round trip above this: the two threads' cores do not share a last-level cache (about
60-150 ns where they do, 300-800 ns where they do not, on the 2-vCPU Zen 4 VM of 2026-12)."""


def thread_round_trip_ns(
    threads: int, trips: int = 20_000, max_seconds: float = 0.05
) -> float | None:
    """Nanoseconds one cache line takes from OpenMP thread 0 to thread 1 and back (None with fewer
    than 2 threads), over `trips` round trips or `max_seconds`, whichever ends first."""
    if threads < 2:
        return None
    ns = _lib().thread_round_trip_ns(trips, max_seconds)
    return None if ns != ns else ns  # NaN: the team did not get two threads
