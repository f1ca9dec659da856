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
