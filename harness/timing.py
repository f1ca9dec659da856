"""Wall-clock timing of a callable: warm-ups, repeats, median and spread, with a set thread count."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

try:
    import resource  # POSIX: getrusage's page-fault count
except ImportError:  # pragma: no cover (Windows)
    resource = None

MAX_REPEAT = 200  # rounds a fast implementation may take at most under min_time_s
# measure_interleaved shuffles each round's order with random.Random(ROUND_ORDER_SEED): the call
# that runs just before another leaves the caches, the allocator's free blocks and the threads as
# it left them, and a fixed order gives every implementation the same predecessor in every round.
# On a 2-vCPU Xeon (family 6 model 167), im2win, torch and torch_cl on conv9 at batch 4 with the
# three probes of `repro run im2win-cpu`, three blocks of 60 rounds each way, alternating: im2win
# 349-356 GFLOP/s at best in the fixed order (right after the threads' round-trip probe, as in
# those runs) and 380-385 shuffled; torch 341-346 and 366-383 (conv1: im2win 350-354 and 364-368).
# Mytkowicz et al., "Producing Wrong Data Without Doing Anything Obviously Wrong!" (ASPLOS 2009),
# show such set-up effects and randomising the set-up as the remedy.
ROUND_ORDER_SEED = 0


def method(warmup: int, repeat: int, min_time_s: float = 0.0, max_repeat: int = MAX_REPEAT) -> str:
    """How measure_interleaved timed, in words, for a run file's timing_method."""
    rounds = f"at least {repeat} rounds"
    if min_time_s > 0:
        rounds += (
            f", and more until its timed calls add up to {min_time_s:g} s (at most {max_repeat} "
            "rounds: a fast implementation gets as many chances at a quiet moment of the machine "
            "as its time allows)"
        )
    return (
        f"time.perf_counter around each call; {warmup} warm-up call(s) discarded, then timed "
        "rounds, each calling every implementation that still takes part once, in an order "
        f"shuffled anew each round (seed {ROUND_ORDER_SEED}): interleaved, so that a burst of "
        "machine noise hits all of them alike, and shuffled, so that none always runs right after "
        "the same call (which ran just before moves a call's time); each implementation "
        f"takes part in {rounds}; reported per implementation: min_ms (best round, as the "
        "im2win papers report: minimum of N runs), time_ms (median) and iqr_ms; gflops is "
        "computed from min_ms; faults_in_best: the process's minor page faults during the best "
        "round's call (getrusage), pages the allocator handed out fresh within that time"
    )


@dataclass(frozen=True)
class Timing:
    time_ms: float  # median
    min_ms: float
    iqr_ms: float
    repeats: int
    # minor page faults the process took during the best round's call (measure_interleaved; None
    # elsewhere): pages the allocator handed out fresh, whose faulting is in that call's time
    faults_in_best: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], warmup: int = 1, repeat: int = 5) -> Timing:
    """Time `fn()`: `warmup` discarded calls, then `repeat` timed ones."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return _summary(times)


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    warmup: int = 1,
    repeat: int = 5,
    min_time_s: float = 0.0,
    max_repeat: int = MAX_REPEAT,
) -> dict[str, Timing]:
    """Time several callables in rounds: each round calls every one of them once, in an order
    shuffled anew each round (random.Random(ROUND_ORDER_SEED): the same orders in every run).

    Every callable is timed `repeat` times at least; one whose timed calls add up to less than
    `min_time_s` seconds stays in the rounds (with the others that do too) until they do, or until
    it has `max_repeat` timings: a best-of-N over a 7 ms call then spans as much machine time as
    over a 100 ms one.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    max_repeat = max(max_repeat, repeat)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    faults: dict[str, list[int]] = {name: [] for name in fns}

    def wants_more(name: str) -> bool:
        done = times[name]
        return len(done) < repeat or (sum(done) < 1e3 * min_time_s and len(done) < max_repeat)

    shuffle = random.Random(ROUND_ORDER_SEED).shuffle
    while playing := [name for name in fns if wants_more(name)]:
        shuffle(playing)
        for name in playing:
            before = _minor_faults()
            start = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
            faults[name].append(_minor_faults() - before)
    return {
        name: dataclasses.replace(_summary(ts), faults_in_best=faults[name][ts.index(min(ts))])
        for name, ts in times.items()
    }


def _minor_faults() -> int:
    """Minor page faults of this process so far, all threads (0 where the OS does not count them)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def _summary(times: list[float]) -> Timing:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), min(times), q[2] - q[0], len(times))


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Run the block with `n` intra-op threads (None: all available cores); restores the old value."""
    n = n or available_cores()
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


CUDA_METHOD = (
    "CUDA events around each call on the current stream; {warmup} warm-up call(s), then {repeat} "
    "timed calls, each preceded by writing a {flush_mib} MiB buffer so the L2 cache starts cold; "
    "reported: min_ms (as the im2win GPU paper: minimum of N runs), time_ms (median), iqr_ms; "
    "TF32 disabled for cuBLAS and cuDNN (FP32 throughout)"
)


def _cold_calls(fn: Callable[[], object], warmup: int, repeat: int, flush_bytes: int):
    """Call `fn()` `warmup` times, then yield `repeat` times, each time after writing a
    `flush_bytes` buffer on the current CUDA stream so that the next call finds L2 cold."""
    flush = torch.empty(flush_bytes // 4, device="cuda")
    for _ in range(warmup):
        fn()
    for _ in range(repeat):
        flush.fill_(0.0)
        yield


def measure_cuda(
    fn: Callable[[], object], warmup: int = 3, repeat: int = 20, flush_bytes: int = 256 * 2**20
) -> Timing:
    """Time `fn()` on the current CUDA stream with events, flushing L2 before every timed call."""
    times = []
    for _ in _cold_calls(fn, warmup, repeat, flush_bytes):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return _summary(times)


def measure_cuda_phases(
    fn: Callable[[list], object], warmup: int = 3, repeat: int = 20, flush_bytes: int = 256 * 2**20
) -> dict[str, float]:
    """The best ms of each phase of `fn(events)`, which appends (phase, start, end) for CUDA
    events it records around its parts, over `repeat` calls, L2 flushed before each (as
    measure_cuda). A phase that runs more than once a call counts the sum of its runs."""
    best: dict[str, float] = {}
    for _ in _cold_calls(lambda: fn([]), warmup, repeat, flush_bytes):
        events: list = []
        fn(events)
        torch.cuda.synchronize()
        call: dict[str, float] = {}
        for name, start, end in events:
            call[name] = call.get(name, 0.0) + start.elapsed_time(end)
        for name, ms in call.items():
            best[name] = min(best.get(name, math.inf), ms)
    return best
