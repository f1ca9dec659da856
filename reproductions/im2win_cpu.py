"""im2win on CPU: the GFLOP/s, memory and paper-comparison tables and figures of the im2win papers.

Reproduces, on the host CPU, the per-layer comparison of "Im2win: Memory Efficient Convolution On SIMD
Architectures" (HPEC 2022): im2win (the paper's NCHW method and an optimized NHWC-window kernel)
against direct convolution, im2col + GEMM and PyTorch/oneDNN, on the paper's twelve layers.

`run` measures and writes one raw run file; `render` draws every table and figure from such a file.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

import im2win
from harness import environment, memory, results, timing
from harness.peak import measure_peak
from im2win.cpu import lib
from im2win.implementations import im2win_with_phases, im2win_workspace_floats
from im2win.metrics import analytic_extra_bytes, gflops
from im2win.reference import conv2d_reference, error_bound
from im2win.shapes import PAPER_LAYERS, ConvShape, reduced
from im2win.transform import window_nchw, window_nhwc
from reproductions.tables import fmt, geomean, grid, table

EXPERIMENT = "im2win-cpu"
SCALES = {
    "quick": {"batch": 4, "reduced": False, "warmup": 1, "repeat": 5},
    "paper": {"batch": 128, "reduced": False, "warmup": 1, "repeat": 5},
    "smoke": {"batch": 1, "reduced": True, "warmup": 1, "repeat": 2},  # seconds; for tests
}
TRANSFORMS = {"im2win_nhwc": window_nhwc, "im2win_nchw": window_nchw}  # materialised windows
LARGE_3X3 = ("conv8", "conv9", "conv10", "conv11")
PAPER_CLAIMS = {  # HPEC 2022 abstract; the paper gives no per-layer CPU numbers
    "memory_saving_vs_im2col": 0.416,
    "speedup_vs_im2col": 3.6,
    "speedup_vs_direct": 5.3,
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


def _inputs(shape: ConvShape, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.input_shape(), generator=gen)
    w = torch.randn(shape.weight_shape(), generator=gen) / math.sqrt(shape.c * shape.r * shape.s)
    b = torch.randn(shape.k, generator=gen)
    return x, w, b


def run(
    scale: str = "quick",
    threads: int | None = None,
    layers=None,
    impls=None,
    repeat: int | None = None,
    warmup: int | None = None,
    seed: int = 0,
    results_dir: Path | None = None,
    progress: bool = True,
    **_,  # options of other experiments (the CLI passes all of them)
) -> Path:
    """Measure every (layer, implementation) pair and write one run file; returns its path."""
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
    shapes = layer_shapes(scale, layers)
    started = time.perf_counter()
    with timing.threads(threads) as n_threads:
        probes = [measure_peak(n_threads)]  # FMA peak: before, after every layer, at the end
        panel_floats = lib().im2win_panel_floats()
        records = []
        bar = tqdm(
            total=3 * len(shapes) * len(impls),
            desc=f"{EXPERIMENT} ({scale})",
            disable=not progress,
            unit="step",
        )
        # Phase 1, layer by layer: correctness against the float64 oracle, then interleaved timing.
        for name, shape in shapes.items():
            x, w, b = _inputs(shape, seed)
            exact = conv2d_reference(x, w, b, shape.stride, shape.padding)
            bound = error_bound(x, w, b, shape.stride, shape.padding)
            calls = {
                impl: functools.partial(
                    im2win.conv2d, x, w, b, shape.stride, shape.padding, impl=impl
                )
                for impl in impls
            }
            violations = {}
            for impl, call in calls.items():
                bar.set_postfix_str(f"{name} {impl} check")
                violations[impl] = float(((call().double() - exact).abs() / bound).max())
                bar.update()
            del exact, bound
            bar.set_postfix_str(f"{name} timing")
            timings = timing.measure_interleaved(calls, cfg["warmup"], cfg["repeat"])
            probes.append(measure_peak(n_threads, trials=2))
            for impl in impls:
                transform_ms = None
                if impl == "im2win":  # streamed windows: the kernel's own timer of that phase
                    transform_ms = min(
                        im2win_with_phases(x, w, b, shape.stride, shape.padding)[1]
                        for _ in range(cfg["repeat"])
                    )
                elif impl in TRANSFORMS:
                    transform = functools.partial(TRANSFORMS[impl], x, shape)
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
                        "max_error_ratio": violations[impl],
                        "correct": violations[impl] <= 1.0,
                        "extra_mem_formula_bytes": analytic_extra_bytes(
                            impl,
                            shape,
                            n_threads,
                            panel_floats,
                            im2win_workspace_floats(shape, n_threads),
                        ),
                    }
                )
                bar.update()
        # Phase 2: memory (after all timing: the allocator setting it needs changes allocation cost).
        mem_ok = memory.supported() and memory.exact_large_allocations()
        by_key = {(r["layer"], r["impl"]): r for r in records}
        for name, shape in shapes.items():
            x, w, b = _inputs(shape, seed)
            for impl in impls:
                bar.set_postfix_str(f"{name} {impl} memory")
                rec = by_key[(name, impl)]
                if mem_ok:
                    call = functools.partial(
                        im2win.conv2d, x, w, b, shape.stride, shape.padding, impl=impl
                    )
                    call()
                    increase, out = memory.peak_increase_bytes(call)
                    rec["peak_rss_increase_bytes"] = increase
                    rec["extra_mem_bytes"] = max(0, increase - out.numel() * out.element_size())
                else:
                    rec["peak_rss_increase_bytes"] = rec["extra_mem_bytes"] = None
                    rec["skipped_memory"] = "this OS cannot reset/read the memory high-water mark"
                bar.update()
        bar.close()
        # The clock of a shared or turbo-boosted CPU drifts: the roof is the best probe of the run.
        probes.append(measure_peak(n_threads))
        peak = max(probes, key=lambda p: p.gflops)
        for rec in records:
            rec["fraction_of_peak"] = rec["gflops"] / peak.gflops
        env = environment.capture(n_threads)
    config = {
        "scale": scale,
        **cfg,
        "threads": n_threads,
        "seed": seed,
        "layers": list(shapes),
        "impls": impls,
        "dtype": "float32",
        "im2win_panel_floats": panel_floats,
        "shapes": {n: s.as_dict() for n, s in shapes.items()},
    }
    return results.write_run(
        EXPERIMENT,
        config=config,
        environment=env,
        records=records,
        results_dir=results_dir,
        timing_method=timing.METHOD.format(warmup=cfg["warmup"], repeat=cfg["repeat"]),
        extra={
            "peak": peak.as_dict() | {"probes_gflops": [p.gflops for p in probes]},
            "memory_method": memory.METHOD,
            "correctness_method": "max |out - float64 F.conv2d| / (16 u sqrt(C*R*S) (|x|*|w| + |b|))"
            " over all outputs; <= 1 passes (im2win.reference)",
            "wall_s": time.perf_counter() - started,
        },
    )


# ----------------------------------------------------------------------------------------------
# Rendering: tables (Markdown) and figures (PNG) from a run file, never by measuring again.


def gflops_table(doc: dict) -> str:
    layers, impls, g = grid(doc, "gflops")
    rows = [[l] + [fmt(g[(l, i)], ".1f") for i in impls] for l in layers]
    rows.append(["**geomean**"] + [fmt(geomean(g[(l, i)] for l in layers), ".1f") for i in impls])
    peak = doc["peak"]["gflops"]
    return (
        f"GFLOP/s (2 x MACs / best time of the interleaved rounds), "
        f"{doc['config']['threads']} threads, batch {doc['config']['batch']}; "
        f"FP32 peak of this machine: {peak:.1f} GFLOP/s, the best of "
        f"{len(doc['peak'].get('probes_gflops', [1]))} FMA probes during the run (range "
        f"{min(doc['peak'].get('probes_gflops', [peak])):.0f}-{peak:.0f}: the clock drifts).\n\n"
        + table(["layer", *impls], rows)
    )


def memory_table(doc: dict) -> str:
    layers, impls, measured = grid(doc, "extra_mem_bytes")
    _, _, formula = grid(doc, "extra_mem_formula_bytes")
    mb = lambda v: fmt(None if v is None else v / 2**20, ".2f")  # noqa: E731
    rows = [
        [l] + [f"{mb(measured[(l, i)])} ({mb(formula[(l, i)])})" for i in impls] for l in layers
    ]
    ratio = [
        [
            l,
            fmt(
                None
                if not measured.get((l, "im2col_gemm")) or measured.get((l, "im2win")) is None
                else measured[(l, "im2win")] / measured[(l, "im2col_gemm")],
                ".3f",
            ),
        ]
        for l in layers
        if (l, "im2win") in measured
    ]
    return (
        "Extra memory per call in MiB: measured (formula). Measured = peak resident-set increase "
        "during the call minus the output; formula = im2win.metrics.analytic_extra_bytes "
        "(n/a: oneDNN's internal workspace has no public formula).\n\n"
        + table(["layer", *impls], rows)
        + "\nim2win extra memory relative to im2col_gemm (goal: <= 0.5 on every layer):\n\n"
        + table(["layer", "im2win / im2col_gemm"], ratio)
    )


def transform_table(doc: dict) -> str:
    layers, impls, tr = grid(doc, "transform_ms")
    _, _, total = grid(doc, "min_ms")
    cols = [i for i in impls if any(tr[(l, i)] is not None for l in layers)]
    rows = [
        [l] + [f"{fmt(tr[(l, i)], '.2f')} / {fmt(total[(l, i)], '.2f')}" for i in cols]
        for l in layers
    ]
    return (
        "Window transform time / whole convolution time (ms, best of the rounds); the transform is included "
        "in the whole convolution's time. im2win_nhwc and im2win_nchw: the materialised transform "
        "timed on its own. im2win: the time its slowest thread spent building window bands inside "
        "the convolution (the kernel's own timers).\n\n" + table(["layer", *cols], rows)
    )


def _ratio_mean(doc, key, num, den, invert=False):
    layers, _, v = grid(doc, key)
    vals = [
        (v[(l, den)] / v[(l, num)]) if not invert else 1 - v[(l, num)] / v[(l, den)]
        for l in layers
        if v.get((l, num)) and v.get((l, den))
    ]
    return statistics.fmean(vals) if vals else None


def paper_comparison(doc: dict) -> str:
    rows = []
    for impl in ("im2win_nchw", "im2win"):
        ours = {
            "memory_saving_vs_im2col": _ratio_mean(
                doc, "extra_mem_bytes", impl, "im2col_gemm", True
            ),
            "speedup_vs_im2col": _ratio_mean(doc, "min_ms", impl, "im2col_gemm"),
            "speedup_vs_direct": _ratio_mean(doc, "min_ms", impl, "direct"),
        }
        for claim, paper in PAPER_CLAIMS.items():
            spec = ".1%" if "memory" in claim else ".2f"
            rows.append([impl, claim, format(paper, spec), fmt(ours[claim], spec)])
    return (
        "The HPEC 2022 paper reports CPU results only as averages over its layers (abstract); it "
        "gives no per-layer CPU numbers and does not name its CPU, so only these averages can be "
        "compared. Ours: arithmetic mean over the layers of this run (speedup = time ratio; "
        "memory saving = 1 - extra memory ratio).\n\n"
        + table(["ours", "claim", "paper", "ours (this run)"], rows)
    )


def goals(doc: dict) -> list[tuple[str, str, bool | None]]:
    """The issue's goals, each (goal, measured, met)."""
    layers, impls, g = grid(doc, "gflops")
    _, _, frac = grid(doc, "fraction_of_peak")
    _, _, mem = grid(doc, "extra_mem_bytes")
    gm = {i: geomean(g[(l, i)] for l in layers) for i in impls}
    out = []
    if {"im2win", "torch"} <= gm.keys():
        out.append(
            (
                "im2win geomean >= torch",
                f"{gm['im2win']:.1f} vs {gm['torch']:.1f} GFLOP/s",
                gm["im2win"] >= gm["torch"],
            )
        )
    if {"im2win", "im2col_gemm"} <= gm.keys():
        out.append(
            (
                "im2win geomean >= 3x im2col_gemm",
                f"{gm['im2win'] / gm['im2col_gemm']:.2f}x",
                gm["im2win"] >= 3 * gm["im2col_gemm"],
            )
        )
    if {"im2win", "torch_cl"} <= gm.keys():
        out.append(
            (
                "stretch: im2win geomean >= torch_cl",
                f"{gm['im2win']:.1f} vs {gm['torch_cl']:.1f} GFLOP/s",
                gm["im2win"] >= gm["torch_cl"],
            )
        )
    big = [l for l in LARGE_3X3 if (l, "im2win") in frac]
    if big:
        worst = min(frac[(l, "im2win")] for l in big)
        out.append(
            (
                "im2win >= 70% of peak on conv8-conv11",
                ", ".join(f"{l} {frac[(l, 'im2win')]:.0%}" for l in big),
                worst >= 0.7,
            )
        )
    ratios = [
        mem[(l, "im2win")] / mem[(l, "im2col_gemm")]
        for l in layers
        if mem.get((l, "im2win")) is not None and mem.get((l, "im2col_gemm"))
    ]
    if ratios:
        out.append(
            (
                "im2win extra memory <= 0.5x im2col_gemm on every layer",
                f"max ratio {max(ratios):.3f}",
                max(ratios) <= 0.5,
            )
        )
    if doc["config"].get("scale") == "quick" and "wall_s" in doc:
        out.append(
            ("quick reproduction < 5 min", f"{doc['wall_s'] / 60:.1f} min", doc["wall_s"] < 300)
        )
    return out


def goals_table(doc: dict) -> str:
    rows = [
        [goal, measured, {True: "met", False: "NOT met", None: "n/a"}[met]]
        for goal, measured, met in goals(doc)
    ]
    return table(["goal", "measured", "status"], rows)


def _figures(doc: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, impls, _ = grid(doc, "gflops")
    width = 0.8 / len(impls)
    paths = []
    specs = [
        (
            "gflops.png",
            "gflops",
            "GFLOP/s",
            1.0,
            f"FP32 convolution throughput, batch {doc['config']['batch']}, "
            f"{doc['config']['threads']} threads",
        ),
        (
            "fraction_of_peak.png",
            "fraction_of_peak",
            "fraction of measured FP32 peak",
            1.0,
            f"Fraction of this machine's FMA peak ({doc['peak']['gflops']:.0f} GFLOP/s)",
        ),
        (
            "memory.png",
            "extra_mem_bytes",
            "extra memory (MiB, log scale)",
            1 / 2**20,
            "Workspace beyond the output (measured peak resident-set increase)",
        ),
    ]
    for filename, key, ylabel, scale, title in specs:
        _, _, v = grid(doc, key)
        fig, ax = plt.subplots(figsize=(12, 4.5))
        for j, impl in enumerate(impls):
            ys = [(v[(l, impl)] or 0) * scale for l in layers]
            ax.bar(
                [i + (j - (len(impls) - 1) / 2) * width for i in range(len(layers))],
                ys,
                width,
                label=impl,
            )
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if key == "extra_mem_bytes":
            ax.set_yscale("symlog", linthresh=0.01)
        if key == "fraction_of_peak":
            ax.axhline(1.0, color="k", lw=0.8)
        ax.legend(ncol=len(impls), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _relative(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    """Write the tables (one Markdown report) and figures of run `doc` into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = doc["environment"]
    git = env.get("git") or {}
    report = "\n".join(
        [
            f"# im2win on CPU ({doc['config']['scale']} scale)\n",
            f"Rendered from `{_relative(source)}`, measured {doc['created_utc']} with `{doc['command']}` "
            f"on {env['cpu_model']} ({doc['config']['threads']} threads), torch "
            f"{env['packages'].get('torch')}, commit {str(git.get('commit'))[:12]}"
            f"{' (dirty)' if git.get('dirty') else ''}. Run time {doc.get('wall_s', float('nan')):.0f} s.\n",
            "## Goals\n",
            goals_table(doc),
            "## Throughput\n",
            gflops_table(doc),
            "## Window transform\n",
            transform_table(doc),
            "## Memory\n",
            memory_table(doc),
            "## Paper versus ours\n",
            paper_comparison(doc),
            "## Figures\n",
            "![GFLOP/s](gflops.png)\n\n![fraction of peak](fraction_of_peak.png)\n\n"
            "![memory](memory.png)\n",
            f"Correctness: every implementation checked before timing: {doc['correctness_method']}. "
            f"All passed: {all(r['correct'] for r in doc['records'])}.\n",
        ]
    )
    report_path = out_dir / "README.md"
    results.atomic_write(report_path, report)
    return [report_path, *_figures(doc, out_dir)]
