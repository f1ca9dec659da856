"""im2win on CPU: the GFLOP/s, memory and paper-comparison tables and figures of the im2win papers.

Reproduces, on the host CPU, the per-layer comparison of "Im2win: Memory Efficient Convolution On SIMD
Architectures" (HPEC 2022): im2win (the paper's NCHW method and an optimized NHWC-window kernel)
against direct convolution, im2col + GEMM and PyTorch/oneDNN, on the paper's twelve layers.

`run` measures and writes one raw run file; `render` draws every table and figure from such a file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import psutil
import torch
from tqdm import tqdm

import im2win
from harness import environment, memory, results, timing
from harness.peak import ROUND_TRIP_METHOD, Peak, measure_peak
from im2win.cpu import SOURCE, isa, kernels_from, levels, lib
from im2win.metrics import gflops
from im2win.reference import CHUNK_BYTES, conv2d_reference, error_bound
from im2win.shapes import PAPER_LAYERS, ConvShape, reduced
from reproductions.im2win_cpu_probes import (
    MICRO_REPS,
    ROUND_FMA_ITERS,
    ROUND_MICRO_REPS,
    ROUND_TRIPS,
    RoundTrips,
    fma_probe,
    microkernel_parts,
    microkernel_probe,
)
from reproductions.im2win_cpu_report import render

EXPERIMENT = "im2win-cpu"
# min_time_s: an implementation stays in a layer's timing rounds until its calls add up to this
# (timing.measure_interleaved): with 5 rounds only, a 7 ms layer's best round was the luck of 35 ms
# of a noisy shared machine (conv9 at 76 or 120 GFLOP/s in two runs), a 140 ms layer's of 0.7 s.
SCALES = {
    "quick": {"batch": 4, "reduced": False, "warmup": 1, "repeat": 5, "min_time_s": 0.4},
    "paper": {"batch": 128, "reduced": False, "warmup": 1, "repeat": 5, "min_time_s": 0.4},
    "smoke": {"batch": 1, "reduced": True, "warmup": 1, "repeat": 2, "min_time_s": 0.0},  # tests
}


def layer_shapes(scale: str, layers=None) -> dict[str, ConvShape]:
    cfg = SCALES[scale]
    names = layers or list(PAPER_LAYERS)
    unknown = [n for n in names if n not in PAPER_LAYERS]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; choose from {', '.join(PAPER_LAYERS)}")
    make = (
        (lambda s: reduced(s, n=cfg["batch"]))
        if cfg["reduced"]
        else (lambda s: s.with_batch(cfg["batch"]))
    )
    return {n: make(PAPER_LAYERS[n]) for n in names}


def peak_bytes(shape: ConvShape, impl: str, threads: int) -> int:
    """About the most memory `run` holds at once for one layer and implementation: the float32
    input and filter, the float64 oracle (conv2d_reference and error_bound: slices of about
    CHUNK_BYTES, then each whole float64 output, concatenated) and, while the implementation's
    output is checked against it, that output, its workspace (its formula; none where none is
    published, as for oneDNN), the copies of input and filter in the memory format its callers
    hold them in (_call: torch_cl_net's channels_last ones) and the float64 difference."""
    x = math.prod(shape.input_shape()) * 4
    w = math.prod(shape.weight_shape()) * 4
    out = math.prod(shape.output_shape()) * 4
    oracle = x + 2 * w + 6 * out + CHUNK_BYTES  # exact, the bound's slices and the bound
    entry = im2win.IMPLEMENTATIONS[impl]
    check = x + w + out + (entry.extra_bytes(shape, threads) or 0)
    if entry.memory_format != torch.contiguous_format:
        check += x + w
    return max(oracle, check + 10 * out)  # exact, bound, and the difference's float64 temporaries


def check_memory(shapes: dict[str, ConvShape], impls: list[str], threads: int, scale: str) -> None:
    """ValueError, one line, where a layer and implementation would need more memory than this
    machine has available (peak_bytes): refused before anything runs, not killed in the middle."""
    available = psutil.virtual_memory().available
    need, name, impl = max(
        (peak_bytes(s, i, threads), n, i) for n, s in shapes.items() for i in impls
    )
    if need > available:
        raise ValueError(
            f"--scale {scale}: {name} with {impl} needs about {need / 2**30:.1f} GiB, and this "
            f"machine has {available / 2**30:.1f} GiB available; leave out the implementations "
            "that need the most (--impls im2win torch torch_cl) or that layer (--layers), or "
            "take a smaller --scale"
        )


def _inputs(shape: ConvShape, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.input_shape(), generator=gen)
    w = torch.randn(shape.weight_shape(), generator=gen) / math.sqrt(shape.c * shape.r * shape.s)
    b = torch.randn(shape.k, generator=gen)
    return x, w, b


def _call(impl: str, x, w, b, shape: ConvShape):
    """im2win.conv2d with `impl` on x and w as its callers hold them (Implementation.arguments,
    made here, outside the timed call: torch_cl_net's channels_last tensors)."""
    x, w = im2win.IMPLEMENTATIONS[impl].arguments(x, w)
    return functools.partial(im2win.conv2d, x, w, b, shape.stride, shape.padding, impl=impl)


# the `repro run` options this experiment takes besides --scale, --results-dir and --no-progress
OPTIONS = ("threads", "layers", "impls", "repeat", "min_time", "warmup", "seed", "isa_level")


def run(
    scale: str = "quick",
    threads: int | None = None,
    layers=None,
    impls=None,
    repeat: int | None = None,
    min_time: float | None = None,
    warmup: int | None = None,
    seed: int = 0,
    isa_level: str = "native",
    results_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """Measure every (layer, implementation) pair and write one run file; returns its path.

    isa_level: "native" (this CPU's widest SIMD), or an x86 level (im2win.cpu.levels.LEVELS)
    that every implementation is held to: the project's kernels and the FMA probe built for it, and
    PyTorch's oneDNN, ATen and MKL held to it (levels.hold_torch; before the process's first
    convolution)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    impls = list(impls or im2win.IMPLEMENTATIONS)
    unknown = [i for i in impls if i not in im2win.IMPLEMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown impl(s) {unknown}; choose from {', '.join(im2win.IMPLEMENTATIONS)}"
        )
    cfg = dict(SCALES[scale])
    cfg["repeat"] = repeat or cfg["repeat"]
    cfg["warmup"] = cfg["warmup"] if warmup is None else warmup
    cfg["min_time_s"] = cfg["min_time_s"] if min_time is None else min_time
    if cfg["min_time_s"] < 0:
        raise ValueError(f"--min-time must be >= 0 seconds, got {cfg['min_time_s']}")
    shapes = layer_shapes(scale, layers)
    native = isa_level == "native"
    held = None if native else levels.hold_torch(isa_level)
    started = time.perf_counter()
    with (
        timing.threads(threads) as n_threads,
        contextlib.nullcontext() if native else kernels_from(SOURCE, isa_level),
    ):
        check_memory(shapes, impls, n_threads, scale)
        command = [scale, cfg, n_threads, seed, list(shapes), impls, isa_level]
        partial = _Partial(results_dir, command)
        state = partial.state
        # FMA peak: before, after every layer, at the end
        probes = [Peak(**p) for p in state["probes"]] + [measure_peak(n_threads, march=isa_level)]
        round_probes = list(state["round_probes"])  # each layer's best short FMA probe
        records = list(state["records"])
        bar = tqdm(
            total=3 * len(shapes) * len(impls),
            desc=f"{EXPERIMENT} ({scale})",
            disable=not progress,
            unit="step",
        )
        # Phase 1, layer by layer: correctness against the float64 oracle, then interleaved timing
        # with freed memory reused (no implementation pays page faults for its fresh buffers).
        steady = memory.steady_allocator()
        for name, shape in shapes.items():
            if name in state["layers"]:  # timed by an interrupted run of the same command
                bar.update(2 * len(impls))
                continue
            x, w, b = _inputs(shape, seed)
            exact = conv2d_reference(x, w, b, shape.stride, shape.padding)
            bound = error_bound(x, w, b, shape.stride, shape.padding)
            calls = {impl: _call(impl, x, w, b, shape) for impl in impls}
            violations = {}
            for impl, call in calls.items():
                bar.set_postfix_str(f"{name} {impl} check")
                violations[impl] = float(((call().double() - exact).abs() / bound).max())
                bar.update()
            del exact, bound
            bar.set_postfix_str(f"{name} timing")
            fma = fma_probe(n_threads, isa_level)
            micro_now = microkernel_probe(n_threads)
            trips = RoundTrips(n_threads)
            timings = timing.measure_interleaved(
                {
                    **calls,
                    " fma probe": fma,
                    " micro-kernel probe": micro_now,
                    " round trip": trips,
                },
                cfg["warmup"],
                cfg["repeat"],
                min_time_s=cfg["min_time_s"],
            )
            probes.append(measure_peak(n_threads, trials=2, march=isa_level))
            round_probes.append(fma.best)
            for impl in impls:
                entry = im2win.IMPLEMENTATIONS[impl]
                transform_ms = pack_ms = wait_ms = path = phases_call_ms = None
                if entry.phases_ms:  # the kernel's own timers of its phases, in the fastest
                    # of `repeat` calls: every part of the breakdown from one call, so that they
                    # add up to its time (the least of each, from different calls, did not)
                    runs, (xa, wa) = [], entry.arguments(x, w)  # as its timed calls had them
                    for _ in range(cfg["repeat"]):
                        began = time.perf_counter()
                        phases = entry.phases_ms(xa, wa, b, shape.stride, shape.padding)
                        runs.append(((time.perf_counter() - began) * 1e3, phases))
                    phases_call_ms, phases = min(runs, key=lambda run: run[0])
                    transform_ms, pack_ms = phases["transform_ms"], phases["pack_ms"]
                    wait_ms, path = phases["wait_ms"], phases["path"]
                elif entry.window_transform:
                    transform = functools.partial(entry.window_transform, x, shape)
                    transform_ms = timing.measure(transform, cfg["warmup"], cfg["repeat"]).min_ms
                t = timings[impl]
                records.append(
                    {
                        "layer": name,
                        "impl": impl,
                        **shape.as_dict(),
                        "flops": shape.flops,
                        **t.as_dict(),
                        "gflops": gflops(shape, t.min_ms),
                        "transform_ms": transform_ms,
                        "pack_ms": pack_ms,
                        "wait_ms": wait_ms,
                        "phases_call_ms": phases_call_ms,
                        "path": path,
                        # what the machine gave during this layer's rounds (best of them)
                        "peak_in_rounds_gflops": fma.best,
                        "microkernel_in_rounds_gflops": micro_now.best,
                        "round_trip_ns_in_rounds": trips.summary(),
                        "max_error_ratio": violations[impl],
                        "correct": violations[impl] <= 1.0,
                        "extra_mem_formula_bytes": entry.extra_bytes(shape, n_threads),
                    }
                )
                bar.update()
            partial.save(records, probes, round_probes, time.perf_counter() - started)
            memory.release_free()  # the next layer's rounds settle anew; this layer's heap goes
        # Phase 2: memory (after all timing: the allocator setting it needs changes allocation cost).
        mem_ok = memory.supported() and memory.exact_large_allocations()
        by_key = {(r["layer"], r["impl"]): r for r in records}
        for name, shape in shapes.items():
            x, w, b = _inputs(shape, seed)
            for impl in impls:
                bar.set_postfix_str(f"{name} {impl} memory")
                rec = by_key[(name, impl)]
                if mem_ok:
                    call = _call(impl, x, w, b, shape)
                    call()
                    increase, calls, out = memory.median_peak_increase_bytes(call)
                    rec["peak_rss_increase_bytes"] = increase
                    rec["peak_rss_increase_bytes_calls"] = calls
                    rec["extra_mem_bytes"] = max(0, increase - out.numel() * out.element_size())
                else:
                    rec["peak_rss_increase_bytes"] = rec["extra_mem_bytes"] = None
                    rec["skipped_memory"] = "this OS cannot reset/read the memory high-water mark"
                bar.update()
        bar.close()
        # The clock of a shared or turbo-boosted CPU drifts: the roof is the best FMA probe of the
        # run, the short ones in the layers' rounds included.
        probes.append(measure_peak(n_threads, march=isa_level))
        peak = max(probes, key=lambda p: p.gflops)
        if round_probes and max(round_probes) > peak.gflops:
            peak = replace(
                peak,
                gflops=max(round_probes),
                method=f"{peak.method}; here a short probe in a layer's timing rounds read higher",
            )
        # the micro-kernel alone in L1: the ceiling the convolution could reach with perfect data
        micro = max(lib().im2win_ukernel_gflops(MICRO_REPS, n_threads) for _ in range(5))
        # and its loop taken apart: what its loads and its broadcasts cost on this CPU
        parts = microkernel_parts(n_threads, isa_level)
        for rec in records:
            rec["fraction_of_peak"] = rec["gflops"] / peak.gflops
        env = environment.capture(n_threads)
    config = {
        "scale": scale,
        **cfg,
        "threads": n_threads,
        "seed": seed,
        # the x86 level every implementation was held to ("native": none), and how
        "isa": isa_level,
        "isa_held": held,
        "layers": list(shapes),
        "impls": impls,
        "dtype": "float32",
        "shapes": {n: s.as_dict() for n, s in shapes.items()},
    }
    raw = results.write_run(
        EXPERIMENT,
        config=config,
        environment=env,
        records=records,
        results_dir=results_dir,
        timing_method=timing.method(cfg["warmup"], cfg["repeat"], cfg["min_time_s"]),
        extra={
            "peak": peak.as_dict()
            | {
                "probes_gflops": [p.gflops for p in probes],
                "round_probes_gflops": round_probes,
                "round_probe_method": f"{ROUND_FMA_ITERS} iterations of the same FMA probe, "
                "one a timing round of each layer (best of them); the micro-kernel's in-round "
                f"probe: {ROUND_MICRO_REPS} calls a thread",
                "round_trip_method": ROUND_TRIP_METHOD.format(trips=ROUND_TRIPS)
                + ", one a timing round of each layer (min, median and max of them)",
            },
            "microkernel": {
                "gflops": micro,
                "fraction_of_peak": micro / peak.gflops,
                "method": f"im2win_ukernel_gflops: the MR x KB micro-kernel on L1-resident "
                f"data, {MICRO_REPS} calls per thread on every thread, best of 5",
            },
            "microkernel_parts": parts,
            # static: what the compiler makes of the micro-kernel on each x86 level (AVX-512 too),
            # and how fast that code issues in llvm-mca's models of Zen and Xeon CPUs
            "microkernel_code": isa.report(),
            "microkernel_model": isa.model(),
            "memory_method": memory.METHOD,
            "timing_allocator": memory.STEADY_METHOD if steady else "the C library's default",
            "correctness_method": "max |out - float64 F.conv2d| / (16 u sqrt(C*R*S) (|x|*|w| + |b|))"
            " over all outputs; <= 1 passes (im2win.reference)",
            "wall_s": time.perf_counter() - started + state["wall_s"],
            # layers timed by an earlier, interrupted run of the same command at the same commit
            "resumed_layers": state["layers"],
        },
    )
    partial.remove()
    return raw


class _Partial:
    """The layers a run has timed so far, saved after each (atomically) so that the same command,
    run again at the same clean commit on the same CPU after an interruption, times only the rest:
    at the paper scale a run takes hours on 2 cores. A dirty or unknown work tree never resumes."""

    def __init__(self, results_dir: Path | None, command: list):
        git = environment.git_state()
        self.enabled = git.get("dirty") is False and git.get("commit") not in (None, "unknown")
        key = [command, git.get("commit"), environment.cpu_details()]
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder = (results_dir or results.default_results_dir()) / "raw" / EXPERIMENT
        self.path = folder / f".partial-{digest}.state"  # not a run file: no .json
        empty = {"layers": [], "records": [], "probes": [], "round_probes": [], "wall_s": 0.0}
        self.state = (
            json.loads(self.path.read_text()) if self.enabled and self.path.is_file() else empty
        )
        self.prior_s = self.state["wall_s"]

    def save(self, records: list, probes: list, round_probes: list, wall_s: float) -> None:
        """After a layer: every record so far (whole layers only) and the probes."""
        if not self.enabled:
            return
        state = {
            "layers": list(dict.fromkeys(r["layer"] for r in records)),
            "records": records,
            "probes": [p.as_dict() for p in probes],
            "round_probes": round_probes,
            "wall_s": self.prior_s + wall_s,
        }
        results.atomic_write(self.path, json.dumps(state))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Rendering: tables (Markdown) and figures (PNG) from a run file, never by measuring again.


__all__ = ["EXPERIMENT", "OPTIONS", "SCALES", "render", "run"]
