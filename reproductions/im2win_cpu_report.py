"""The tables and figures of `repro run im2win-cpu`, drawn from its raw file: GFLOP/s per layer and
implementation, fraction of the measured FMA peak, extra memory against the formula, window
transform time, the paper-versus-ours averages and the goals."""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import environment, results
from im2win.cpu.levels import LEVELS
from reproductions.im2win_cpu_goals import (
    goals_history,
    goals_table,
    relative,
    run_level,
)
from reproductions.im2win_cpu_time import (
    breakdown_table,
    faults_line,
    isa_table,
    parts_table,
    rounds_table,
    transform_table,
)
from reproductions.tables import fmt, geomean, grid, table


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
        f"{min(doc['peak'].get('probes_gflops', [peak])):.0f}-{peak:.0f}: the clock drifts)."
        + (
            f" Allocator while timing: {doc['timing_allocator']}."
            if "timing_allocator" in doc
            else ""
        )
        + _rounds_line(doc)
        + _microkernel_line(doc)
        + "\n\n"
        + table(["layer", *impls], rows)
        + faults_line(doc)
    )


PAPER_CLAIMS = {  # HPEC 2022 abstract; the paper gives no per-layer CPU numbers
    "memory_saving_vs_im2col": 0.416,
    "speedup_vs_im2col": 3.6,
    "speedup_vs_direct": 5.3,
}


def _rounds_line(doc: dict) -> str:
    """How many timed rounds the implementations took part in (runs since 2026-12-02 time a fast
    implementation until its calls add up to min_time_s)."""
    counts = [r["repeats"] for r in doc["records"] if "repeats" in r]
    min_time = doc["config"].get("min_time_s")
    if not counts or not min_time:
        return ""
    return (
        f" Timed rounds: {min(counts)}-{max(counts)} an implementation and layer (at least "
        f"{doc['config']['repeat']}, more until its calls add up to {min_time:g} s)."
    )


def _microkernel_line(doc: dict) -> str:
    """The micro-kernel's own throughput in L1 (runs since 2026-12 record it)."""
    micro = doc.get("microkernel")
    if not micro:
        return ""
    return (
        f" The im2win micro-kernel alone, on L1-resident data: {micro['gflops']:.1f} GFLOP/s = "
        f"{micro['fraction_of_peak']:.0%} of that peak, the ceiling of the whole convolution; "
        "the gap between it and each layer's fraction of peak is what packing, blocking, "
        "threading and tails cost."
    )


def _memory_calls(doc: dict) -> str:
    """The calls each memory figure comes from: the median of several (runs since 2026-12-04
    record each call's), or one."""
    calls = [
        r["peak_rss_increase_bytes_calls"]
        for r in doc["records"]
        if r.get("peak_rss_increase_bytes_calls")
    ]
    return f"a call, the median of {len(calls[0])} calls," if calls else "one call"


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
        f"during {_memory_calls(doc)} minus the output; formula = "
        "im2win.IMPLEMENTATIONS[impl].extra_bytes (n/a: oneDNN's internal workspace has no public "
        "formula).\n\n"
        + table(["layer", *impls], rows)
        + "\nim2win extra memory relative to im2col_gemm (goal: <= 0.5 on every layer):\n\n"
        + table(["layer", "im2win / im2col_gemm"], ratio)
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


def _figures(doc: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, impls, _ = grid(doc, "gflops")
    width = 0.8 / len(impls)
    paths = []
    level = run_level(doc)
    held = "" if level == "native" else f", every implementation held to {level}"
    specs = [
        (
            "gflops.png",
            "gflops",
            "GFLOP/s",
            1.0,
            f"FP32 convolution throughput, batch {doc['config']['batch']}, "
            f"{doc['config']['threads']} threads{held}",
        ),
        (
            "fraction_of_peak.png",
            "fraction_of_peak",
            "fraction of measured FP32 peak",
            1.0,
            f"Fraction of this machine's FMA peak ({doc['peak']['gflops']:.0f} GFLOP/s){held}",
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


def held_line(doc: dict) -> str:
    """What a run held to one x86 level (repro run im2win-cpu --isa) ran; "" for a native run."""
    level, held = run_level(doc), doc["config"].get("isa_held")
    if level == "native" or not held:
        return ""
    env = " ".join(f"{k}={v}" for k, v in held["environment"].items())
    return (
        f"\nEvery implementation held to {level} ({LEVELS[level].simd}), whatever wider SIMD "
        f"this CPU has: im2win's kernels and the FMA probe built with -march={level}, and PyTorch held "
        f"by {env}; seen: oneDNN ran its {held['onednn_convolution']} convolution and ATen its "
        f"{held['aten_capability']} kernels (MKL cannot be asked which it runs). So the peak, "
        "the peers and im2win are those of this level's vectors, as on a CPU without the wider "
        "ones; the caches, clock and memory are this CPU's.\n"
    )


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    """Write the tables (one Markdown report) and figures of run `doc` into out_dir (a run held to
    an x86 level, into its subfolder named after the level)."""
    level = run_level(doc)
    if level != "native":
        out_dir = out_dir / level
    out_dir.mkdir(parents=True, exist_ok=True)
    env = doc["environment"]
    git = env.get("git") or {}
    title = doc["config"]["scale"] + " scale" + ("" if level == "native" else f", {level}")
    report = "\n".join(
        [
            f"# im2win on CPU ({title})\n",
            f"Rendered from `{relative(source)}`, measured {doc['created_utc']} with `{doc['command']}` "
            f"on {environment.describe_cpu(env)}, {doc['config']['threads']} threads, torch "
            f"{env['packages'].get('torch')}, commit {str(git.get('commit'))[:12]}"
            f"{' (dirty)' if git.get('dirty') else ''}. Run time {doc.get('wall_s', float('nan')):.0f} s"
            + (
                f" (resumed: {', '.join(doc['resumed_layers'])} timed by an earlier, interrupted"
                " run of the same command)"
                if doc.get("resumed_layers")
                else ""
            )
            + ".\n"
            + held_line(doc),
            "## Goals\n",
            goals_table(doc),
            goals_history(doc, source),
            "## Throughput\n",
            gflops_table(doc),
            "## Window transform\n",
            transform_table(doc),
            breakdown_table(doc),
            rounds_table(doc),
            parts_table(doc),
            isa_table(doc),
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
