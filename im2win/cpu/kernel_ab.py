"""Time variants of the CPU kernel source side by side: python -m im2win.cpu.kernel_ab A.cpp B.cpp ...

Each variant (a copy of im2win/cpu/im2win_cpu.cpp with a change, same entry points) is compiled like
the package's kernels and loaded into one process; im2win then runs on each, call by call, in an
order shuffled anew each round (as harness.timing.measure_interleaved), for `--rounds` rounds per
layer, so a burst of machine noise hits every variant alike and none always runs after the same one
(on a shared VM, runs minutes apart differ by 10-25%; variants interleaved this way are mostly
within a few percent of each other when equal, but on a Xeon the best of 30 rounds put two copies of
one source 10% apart on conv11, level in 150). Reported per layer: the best and the median time's
GFLOP/s of each variant, the slowest thread's time building window bands and packing the filter
(best of each), and each variant against the first.
Freed memory is reused while timing (harness.memory.steady_allocator), as in `repro run
im2win-cpu`. The threads' round trip is printed from before and after the rounds: on a VM whose
vCPUs may or may not share a last-level cache (harness.peak.thread_round_trip_ns), variants
compared in one placement may rank differently in the other. A short round trip before each round
tells where the threads sat in it; where a layer's rounds ran in both placements, each variant's
best and median in each are printed below the layer too, with im2win's median window bands and
filter packing: the median says what the placement does to a typical call, which the best of many
rounds can hide.

    python -m im2win.cpu.kernel_ab im2win/cpu/im2win_cpu.cpp --blocks 12x2 6x4 --layers conv8

times register blocks of one source against each other (on AVX-512, where the source's 12 x 2 and
the 6 x 4 that llvm-mca's Zen 4 model prefers are both candidates: python -m im2win.cpu.isa --model).

    python -m im2win.cpu.kernel_ab im2win/cpu/im2win_cpu.cpp --defines IM2WIN_INTEL=0 IM2WIN_INTEL=1

times the source's AMD and Intel tuning (kIntel there: the main loop's steps a pass, its B-row
prefetch, the packed filter's stores) side by side on whichever CPU this is.

    python -m im2win.cpu.kernel_ab im2win/cpu/im2win_cpu.cpp --impl im2win direct_nhwc --channels-last

times implementations of one source side by side (each variant with each --impl), here on input
already in channels_last memory, as a network of these layers would hand it on.

    python -m im2win.cpu.kernel_ab base.cpp variant.cpp --march x86-64-v3

times the AVX2 code of both on a host that has AVX-512 (any x86 level this CPU runs; the peers of
--between held to it too, as by `repro run im2win-cpu --isa`).

    python -m im2win.cpu.kernel_ab base.cpp variant.cpp --cold

writes a buffer twice the size of the last-level cache before every timed call, so each call
finds its input, filter and output in memory, not cache: as at batch 128, or in `repro run
im2win-cpu`, where the other implementations run between im2win's calls. (Prefetches and memory
layouts can win there and be level in cache; the window bands' input prefetch was chosen so.)

    python -m im2win.cpu.kernel_ab base.cpp variant.cpp --between torch_cl

runs oneDNN's channels_last convolution (untimed) before every timed call, as the other
implementations run between im2win's calls in `repro run im2win-cpu`: its threads and buffers
leave lines of im2win's freed buffers in either core's cache, which a flush does not.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from harness import environment, memory, timing
from harness.args import at_least, thread_count
from harness.native import CompilerError
from harness.peak import APART_NS, thread_round_trip_ns
from im2win.cpu import block_argument, block_defines, kernels_from, levels
from im2win.implementations import IMPLEMENTATIONS, im2win_with_phases
from im2win.shapes import PAPER_LAYERS

# A -D definition --defines takes: NAME=VALUE (a C identifier, a value without spaces).
_DEFINE = re.compile(r"[A-Za-z_]\w*=[\w.+-]+")
CXX_SUFFIXES = (".cpp", ".cc", ".cxx", ".C")  # what the compiler reads as C++ by its name
# Peers --between may run: those not built from the kernel source being timed.
BETWEEN = ("torch", "torch_cl", "im2col_gemm")


@dataclass
class Placement:
    """The rounds of one layer in which the threads sat in one placement: per variant, the seconds
    of its calls, and im2win's (window bands ms, filter packing ms) of its phase-timed calls."""

    rounds: int
    seconds: list[list[float]]
    phases: list[list[tuple[float, float]]]

    @classmethod
    def empty(cls, variants: int) -> Placement:
        return cls(0, [[] for _ in range(variants)], [[] for _ in range(variants)])

    def gflops(self, flops: float, stat) -> list[float]:
        """Each variant's GFLOP/s at `stat` (min: its best call, statistics.median) of its times."""
        return [flops / stat(times) / 1e9 for times in self.seconds]

    def median_phases(self) -> list[tuple[float, float] | None]:
        """Each variant's median bands and packing ms (None where it timed none)."""
        return [
            tuple(statistics.median(part) for part in zip(*runs, strict=True)) if runs else None
            for runs in self.phases
        ]


# The implementations whose kernels are in im2win_cpu.cpp (a variant's source changes them).
IMPL_CHOICES = ["im2win", "im2win_nhwc", "direct", "direct_nhwc"]


def compare(
    variants: list[tuple[Path, tuple[str, ...], str]],
    layers: list[str],
    batch: int,
    rounds: int,
    march: str = "native",
    cold: bool = False,
    threads: int = 1,
    progress: bool = False,
    between: tuple[str, ...] = (),
    channels_last: bool = False,
) -> list:
    """[(layer, flops, [(gflops, band_ms, pack_ms, median_gflops) per variant], by_placement)]:
    best (and median) of `rounds` interleaved calls each (the bands and the filter's packing: the
    least of the kernel's own timers, im2win only); a variant is a source and the -D definitions
    it is built with, and the implementation it times (an id of IMPL_CHOICES). cold: every
    call starts with the caches flushed (see evictor).
    by_placement: with 2 threads or more, {"together" or "apart": Placement}, the rounds in which
    the threads sat so (placement(), measured before each round). progress: a progress bar of the
    rounds on stderr. between: peers (BETWEEN) run untimed before every timed call, as in `repro
    run im2win-cpu`."""
    flush = evictor() if cold else None
    rows = []
    bar = tqdm(total=len(layers) * rounds, desc="kernel_ab", unit="round", disable=not progress)
    for name in layers:
        bar.set_postfix_str(name)
        shape = PAPER_LAYERS[name].with_batch(batch)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(shape.input_shape(), generator=gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(shape.weight_shape(), generator=gen) / math.sqrt(
            shape.c * shape.r * shape.s
        )
        b = torch.randn(shape.k, generator=gen)
        times: list[list[float]] = [[] for _ in variants]  # every call's seconds, per variant
        bands = [math.inf] * len(variants)
        packs = [math.inf] * len(variants)
        places: dict[str, Placement] = {}

        with torch.no_grad():
            for src, defs, vimpl in variants:  # build and warm up every variant first
                with kernels_from(src, march, defs):
                    IMPLEMENTATIONS[vimpl].run(x, w, b, shape.stride, shape.padding)
            order = list(range(len(variants)))
            shuffle = random.Random(timing.ROUND_ORDER_SEED).shuffle
            for _ in range(rounds):
                bar.update()
                where = placement(threads)
                if where:
                    place = places.setdefault(where, Placement.empty(len(variants)))
                    place.rounds += 1
                shuffle(order)  # as timing.measure_interleaved: no variant always after another
                for i in order:
                    src, defs, vimpl = variants[i]
                    with kernels_from(src, march, defs):
                        settle(between, flush, x, w, b, shape)
                        start = time.perf_counter()
                        IMPLEMENTATIONS[vimpl].run(x, w, b, shape.stride, shape.padding)
                        elapsed = time.perf_counter() - start
                        times[i].append(elapsed)
                        if where:
                            place.seconds[i].append(elapsed)
                        if vimpl == "im2win":
                            settle(between, flush, x, w, b, shape)
                            phases = im2win_with_phases(x, w, b, shape.stride, shape.padding)[1]
                            bands[i] = min(bands[i], phases["transform_ms"])
                            packs[i] = min(packs[i], phases["pack_ms"])
                            if where:
                                place.phases[i].append((phases["transform_ms"], phases["pack_ms"]))
        cells = zip(map(min, times), bands, packs, map(statistics.median, times), strict=True)
        rows.append(
            (
                name,
                shape.flops,
                [
                    (shape.flops / t / 1e9, bm, pm, shape.flops / mt / 1e9)
                    for t, bm, pm, mt in cells
                ],
                places,
            )
        )
    bar.close()
    return rows


def settle(between: tuple[str, ...], flush: torch.Tensor | None, x, w, b, shape) -> None:
    """Before a timed call: the peers `between` on the same arguments, then the flush (None:
    none)."""
    for peer in between:
        IMPLEMENTATIONS[peer].run(x, w, b, shape.stride, shape.padding)
    if flush is not None:
        flush.add_(1.0)


def placement(threads: int) -> str | None:
    """Where OpenMP threads 0 and 1 sit now, from a short round trip (about 1 ms): "together"
    (sharing a last-level cache), "apart", or None with one thread."""
    ns = thread_round_trip_ns(threads, trips=2_000, max_seconds=0.005)
    if ns is None:
        return None
    return "apart" if ns > APART_NS else "together"


def evictor() -> torch.Tensor:
    """A buffer twice the size of the last-level cache cpu0 sees (64 MiB where sysfs does not say):
    writing it (add_) pushes everything else out of the caches."""
    llc = environment.cpu_details()["l3_bytes"] or 32 << 20
    return torch.zeros(2 * llc // 4)


def build(variants: list[tuple], labels: list[str], march: str) -> None:
    """Every variant (its source and definitions first) compiled and loaded before any round
    runs: one that does not compile, or lacks an entry point, stops kernel_ab with a message that
    names it."""
    for (source, defines, *_), label in zip(variants, labels, strict=True):
        try:
            with kernels_from(source, march, defines):
                pass
        except CompilerError as err:
            raise SystemExit(f"kernel_ab: {label}: {err}") from None
        except AttributeError as err:  # ctypes: "LIB.so: undefined symbol: NAME"
            raise SystemExit(
                f"kernel_ab: {label} lacks an entry point of im2win_cpu.cpp ({err})"
            ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m im2win.cpu.kernel_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources", nargs="+", type=Path, help="kernel sources; the first is the base"
    )
    parser.add_argument(
        "--layers", nargs="+", default=list(PAPER_LAYERS), choices=list(PAPER_LAYERS)
    )
    parser.add_argument("--batch", type=at_least(1), default=4)
    parser.add_argument(
        "--rounds", type=at_least(1), default=15, help="interleaved calls per variant"
    )
    parser.add_argument(
        "--threads", type=thread_count, default=None, help="default: the usable cores"
    )
    parser.add_argument(
        "--impl",
        nargs="+",
        default=["im2win"],
        choices=IMPL_CHOICES,
        help="the implementation(s) timed; several: each on every variant, side by side (e.g. one "
        "source, --impl im2win direct_nhwc --channels-last)",
    )
    parser.add_argument(
        "--blocks",
        nargs="+",
        metavar="MRxNR",
        type=block_argument,
        help="time every source with each of these register blocks (e.g. 12x2 6x4: MR pixels by "
        "NR vectors of output channels, set through -DIM2WIN_MR/-DIM2WIN_NR)",
    )
    parser.add_argument(
        "--defines",
        nargs="+",
        metavar="NAME=VALUE",
        help="time every source built with each of these -D definitions apart (e.g. "
        "IM2WIN_INTEL=0 IM2WIN_INTEL=1: AMD's and Intel's tuning, both on this CPU)",
    )
    parser.add_argument(
        "--march",
        default="native",
        help="build every variant for this x86 level (e.g. x86-64-v3: the AVX2 code on an AVX-512 "
        "host), and hold the --between peers to it (x86-64-v2 and wider); it must be one this "
        "CPU runs",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="flush the caches before every timed call (input, filter and output in memory)",
    )
    parser.add_argument(
        "--between",
        nargs="+",
        default=[],
        choices=BETWEEN,
        help="run these peers (untimed) before every timed call, as the other implementations run "
        "between im2win's calls in `repro run im2win-cpu`: their threads and buffers leave the "
        "caches as there",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="give every call its input in channels_last memory, as a network of im2win layers "
        "does (im2win's output is channels_last); default: contiguous NCHW, as `repro run "
        "im2win-cpu` times it",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar of the rounds on stderr"
    )
    args = parser.parse_args(argv)
    held = False  # the peers run between the calls at --march's level too, where oneDNN has it
    if args.march != "native":
        try:
            levels.check_runs_here(args.march)
            if args.between and levels.LEVELS[args.march].onednn:
                held = bool(levels.hold_torch(args.march))
        except ValueError as err:
            parser.error(f"--march {args.march}: {err}")
    missing = [str(s) for s in args.sources if not s.is_file()]
    if missing:
        parser.error(f"no such kernel source: {', '.join(missing)}")
    # the compiler takes what it does not know for a linker script, and fails with the linker's words
    foreign = [str(s) for s in args.sources if s.suffix not in CXX_SUFFIXES]
    if foreign:
        parser.error(
            f"not a C++ source ({', '.join(CXX_SUFFIXES)}): {', '.join(foreign)}; give copies of "
            "im2win/cpu/im2win_cpu.cpp"
        )
    blocks = [(b, block_defines(b)) for b in args.blocks or ()] or [("", ())]
    bad = [d for d in args.defines or () if not _DEFINE.fullmatch(d)]
    if bad:
        parser.error(f"--defines {' '.join(bad)}: give each as NAME=VALUE, e.g. IM2WIN_INTEL=1")
    defines = [(d, (d,)) for d in args.defines or ()] or [("", ())]
    impls = list(dict.fromkeys(args.impl))
    crossed = [  # in this order
        (s, b, d, i) for s in args.sources for b in blocks for d in defines for i in impls
    ]
    variants = [(src, bdefs + ddefs, impl) for src, (_, bdefs), (_, ddefs), impl in crossed]
    labels = [
        f"{src.name}{'@' + b if b else ''}{'+' + d if d else ''}"
        + (f"#{impl}" if len(impls) > 1 else "")
        for src, (b, _), (d, _), impl in crossed
    ]
    build(variants, labels, args.march)
    memory.steady_allocator()
    with timing.threads(args.threads) as n:
        trips = [thread_round_trip_ns(n)]
        rows = compare(
            variants,
            args.layers,
            args.batch,
            args.rounds,
            args.march,
            args.cold,
            n,
            not args.no_progress,
            tuple(args.between),
            args.channels_last,
        )
        trips.append(thread_round_trip_ns(n))
    print(
        f"{', '.join(impls)}, batch {args.batch}, {n} threads, -march={args.march}, "
        f"best of {args.rounds} interleaved rounds"
        + (", caches flushed before each call" if args.cold else "")
        + (", channels_last input" if args.channels_last else "")
        + (f", {' and '.join(args.between)} run before each call" if args.between else "")
        + (f" (held to {args.march})" if held else "")
    )
    if None not in trips:  # where the threads ran: see harness.peak.thread_round_trip_ns
        print(
            f"threads' round trip: {trips[0]:.0f} ns before, {trips[1]:.0f} ns after (about 100: "
            "their cores share a last-level cache; several times that: they do not)"
        )
    print(
        "GFLOP/s of the best call (im2win: window bands ms, filter packing ms) per variant; x: "
        "each against the first; then the median call's GFLOP/s and x (on a shared VM the best "
        "of 30 rounds put two copies of one source 10% apart on conv11: read both, and more "
        "rounds)"
    )
    for layer, flops, cells, places in rows:
        base, base_median = cells[0][0], cells[0][3]
        text = "  ".join(
            f"{label}={g:7.1f}"
            + (f" ({bm:.2f}, {pm:.2f} ms)" if math.isfinite(bm) else "")
            + f" x{g / base:.3f} median {mg:.1f} x{mg / base_median:.3f}"
            for label, (g, bm, pm, mg) in zip(labels, cells, strict=True)
        )
        print(f"{layer:7s} {text}")
        if len(places) > 1:  # rounds in both placements: each variant's best and median in each
            for where, place in sorted(places.items()):
                best, median = place.gflops(flops, min), place.gflops(flops, statistics.median)
                text = "  ".join(
                    f"{label}={g:7.1f} x{g / best[0]:.3f} (median {m:.1f}"
                    + (f"; {ph[0]:.2f}, {ph[1]:.2f} ms" if ph else "")
                    + ")"
                    for label, g, m, ph in zip(
                        labels, best, median, place.median_phases(), strict=True
                    )
                )
                print(f"  {where} ({place.rounds} rounds): {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
