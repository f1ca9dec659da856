"""The probes a `repro run im2win-cpu` takes beside the convolutions: how fast this machine was
during each layer's timing rounds (a short FMA probe, the micro-kernel alone in L1, the threads'
round trip), and the micro-kernel's main loop taken apart, one kind of instruction at a time."""

from __future__ import annotations

import statistics

from harness import timing
from harness.peak import measure_peak, thread_round_trip_ns
from im2win.cpu import lib

MICRO_REPS = 400_000  # calls of the micro-kernel per thread in its L1 probe (0.2-0.5 s)
# The two probes that also take part in every layer's timing rounds, as if implementations: a
# short FMA probe and a short L1 micro-kernel probe (5-15 ms each), so that each layer's GFLOP/s
# can be read against what the machine gave at the same moments (a shared VM's speed drifts by
# up to 2x within a run).
ROUND_FMA_ITERS = 2_000_000
ROUND_MICRO_REPS = 20_000
# And a third: the threads' round trip (about 2-9 ms), since whether the two threads' cores share
# a last-level cache changes the time of everything the threads share; on the 2-vCPU VM this
# project runs on it changed within minutes (100 or 420 ns), and conv11 ran 14% slower at 420.
ROUND_TRIPS = 20_000


class Probe:
    """A callable for measure_interleaved that keeps the best GFLOP/s `measure()` returned."""

    def __init__(self, measure):
        self.measure, self.best = measure, 0.0

    def __call__(self):
        self.best = max(self.best, self.measure())


def fma_probe(n_threads: int, isa_level: str) -> Probe:
    """The short FMA probe a round, built for `isa_level`."""
    return Probe(lambda: measure_peak(n_threads, ROUND_FMA_ITERS, 1, isa_level).gflops)


def microkernel_probe(n_threads: int) -> Probe:
    """The short L1 micro-kernel probe a round."""
    return Probe(lambda: lib().im2win_ukernel_gflops(ROUND_MICRO_REPS, n_threads))


PARTS_ROUNDS = 20  # interleaved rounds of the micro-kernel taken apart (about 1-2 s in all)
PARTS = {  # name -> what runs: the FMA probe, then the micro-kernel's main loop part by part
    "fma_probe": "the FMA probe (independent FMA chains on registers)",
    "fmas": "the micro-kernel's multiply-adds alone, every operand in registers",
    "b_loads": "+ its B vectors loaded from the panel each step",
    "micro_kernel": "+ its broadcasts of the window rows: the micro-kernel itself",
}


NO_FMA = (
    "Not measured: this x86 level has no FMA, and the loop's separate multiplies, the same for "
    "every row once its broadcasts are gone, would be computed once a step"
)


def microkernel_parts(n_threads: int, isa_level: str) -> dict:
    """The micro-kernel's main loop on L1-resident data, one kind of instruction added at a time
    (im2win_ukernel_part_gflops), with the FMA probe, in interleaved rounds: best GFLOP/s of each
    ({"skipped": reason} on an x86 level without FMA)."""
    if lib().im2win_ukernel_part_gflops(0, 1, 1) == 0.0:
        return {"skipped": NO_FMA}

    def part(number: int):
        return lambda: lib().im2win_ukernel_part_gflops(number, ROUND_MICRO_REPS, n_threads)

    probes = {
        "fma_probe": fma_probe(n_threads, isa_level),
        "fmas": Probe(part(0)),
        "b_loads": Probe(part(1)),
        "micro_kernel": microkernel_probe(n_threads),
    }
    timing.measure_interleaved(probes, 1, PARTS_ROUNDS)
    return {
        "gflops": {name: probe.best for name, probe in probes.items()},
        "parts": PARTS,
        "method": f"best of {PARTS_ROUNDS} interleaved rounds on {n_threads} threads, each part "
        f"{ROUND_MICRO_REPS} calls of its loop a thread over the micro-kernel's L1-resident "
        f"data (the same accumulators, multiply-adds and reduction steps), the FMA probe "
        f"{ROUND_FMA_ITERS} iterations",
    }


class RoundTrips:
    """A callable for measure_interleaved that keeps every threads' round trip it measures
    (harness.peak.thread_round_trip_ns): where the threads ran during a layer's rounds."""

    def __init__(self, threads: int):
        self.threads, self.samples = threads, []

    def __call__(self):
        ns = thread_round_trip_ns(self.threads, ROUND_TRIPS)
        if ns is not None:
            self.samples.append(ns)

    def summary(self) -> dict | None:
        """{"min", "median", "max"} nanoseconds, None without two threads."""
        if not self.samples:
            return None
        return {
            "min": min(self.samples),
            "median": statistics.median(self.samples),
            "max": max(self.samples),
        }
