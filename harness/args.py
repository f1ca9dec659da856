"""argparse types shared by the suite's command lines."""

from __future__ import annotations

import argparse


def at_least(minimum: float, kind=int):
    """An argparse type: a `kind` number >= `minimum`, refused as a usage error before anything
    runs (`repro run --threads 0` once ran a whole measurement on every core, and `kernel_ab
    --batch 0` took the process down in the kernel)."""
    noun = "whole number" if kind is int else "number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {noun}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {noun} >= {minimum:g}, got {text}")
        return value

    return parse


def thread_count(text: str) -> int:
    """An argparse type: threads from 1 to the cores this process may use (its affinity mask,
    harness.timing.available_cores). More threads than cores time the operating system's time
    slicing, not the code: `repro run im2win-cpu --scale smoke --threads 64` took 2 min on 2 cores,
    where 2 threads take seconds."""
    from harness.timing import available_cores  # imports torch: only when a count is given

    value = at_least(1)(text)
    cores = available_cores()
    if value > cores:
        raise argparse.ArgumentTypeError(
            f"must be at most {cores}, the cores this process may use (more threads than cores "
            f"would time the operating system's time slicing), got {text}"
        )
    return value
