"""The tables and figures of `repro run im2win-cpu`, drawn from its raw file: GFLOP/s per layer and
implementation, fraction of the measured FMA peak, extra memory against the formula, window
transform time, the paper-versus-ours averages and the goals."""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import results
from im2win.cpu import isa
from reproductions.tables import fmt, geomean, grid, table

LARGE_3X3 = ("conv8", "conv9", "conv10", "conv11")  # the goal: >= 85% of the FMA peak on these
PAPER_CLAIMS = {  # HPEC 2022 abstract; the paper gives no per-layer CPU numbers
    "memory_saving_vs_im2col": 0.416,
    "speedup_vs_im2col": 3.6,
    "speedup_vs_direct": 5.3,
}


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
    )


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


def isa_table(doc: dict) -> str:
    """The micro-kernel's main loop on each x86 level, from the compiler's assembly (runs since
    2026-12-02 record it)."""
    code = doc.get("microkernel_code")
    if not code:
        return ""
    if "skipped" in code:
        return f"## The micro-kernel on each x86 level\n\nNot read: {code['skipped']}.\n"
    return (
        "## The micro-kernel on each x86 level\n\n"
        "One pass of the micro-kernel's main loop (one reduction step of an M-pixel tile), from "
        f"{code['method']}; compiler: {code['compiler']}. The levels this CPU runs are also "
        "checked against the float64 oracle by the tests; the others are only read. "
        "Stack accesses are spills, and moves between general and vector registers are row "
        "pointers parked for lack of general registers: both take issue slots from the FMAs.\n\n"
        + isa.table(code)
        + model_section(doc.get("microkernel_model"))
    )


def model_section(modelled: dict | None) -> str:
    """The main loop's throughput in llvm-mca's models of Zen and Xeon CPUs (runs since
    2026-12-02 record it)."""
    if not modelled:
        return ""
    if "skipped" in modelled:
        return f"\nNot modelled: {modelled['skipped']}.\n"
    return (
        f"\nThe same loops in the models of {modelled['tool']}: {modelled['method']} "
        "The source's register block is the one im2win runs; the others are candidates built "
        "with -DIM2WIN_MR/-DIM2WIN_NR (python -m im2win.cpu.isa --model --block MRxNR). "
        '"Bound by" is LLVM\'s name for the pipe the model keeps busiest (a CPU modelled with '
        "another's resources shows that one's names).\n\n" + isa.model_table(modelled)
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
        "during the call minus the output; formula = im2win.IMPLEMENTATIONS[impl].extra_bytes "
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


def breakdown_table(doc: dict) -> str:
    """Where im2win's time goes per layer (runs since 2026-12 time the filter packing too, runs
    since 2026-12-02 the threads' wait)."""
    recs = {r["layer"]: r for r in doc["records"] if r["impl"] == "im2win"}
    micro = (doc.get("microkernel") or {}).get("gflops")
    if not micro or not any(r.get("pack_ms") is not None for r in recs.values()):
        return ""
    waits = any(r.get("wait_ms") is not None for r in recs.values())
    rows = []
    for layer, r in recs.items():
        total, bands, pack = r["min_ms"], r.get("transform_ms"), r.get("pack_ms")
        wait = r.get("wait_ms")
        if bands is None or pack is None:
            rows.append([layer, f"{total:.2f}", "-", "-", *(["-"] if waits else []), "-", "-"])
            continue
        rest = max(total - bands - pack - (wait or 0.0), 1e-9)
        gflops = r["flops"] / (rest * 1e-3) / 1e9
        ceiling = r.get("microkernel_in_rounds_gflops") or micro
        rows.append(
            [
                layer,
                f"{total:.2f}",
                f"{bands:.2f} ({bands / total:.0%})",
                f"{pack:.2f} ({pack / total:.0%})",
                *(
                    [f"{wait:.2f} ({wait / total:.0%})" if wait is not None else "-"]
                    if waits
                    else []
                ),
                f"{gflops:.1f} ({gflops / ceiling:.0%})",
                r.get("path") or "streamed bands",  # runs before 2026-12-02 stream only here
            ]
        )
    wait_text = (
        ", how long the first thread done waited for the last at the end (the threads' imbalance; "
        "the median of the rounds)"
        if waits
        else ""
    )
    return (
        "\n## Where im2win's time goes\n\nPer layer: the whole call (best round), the time spent "
        "building window bands (the slowest thread's, from the kernel's own timers; on the whole "
        "window tensor's path, that transform timed on its own) and packing the filter (the "
        f"slowest thread's){wait_text}, and the GFLOP/s of what is left (the micro-kernel over the "
        "bands, with its loads and tails"
        + ("" if waits else " and the threads' imbalance")
        + (
            ") against the micro-kernel alone in L1, measured in the layer's own timing rounds "
            "(the next section).\n\n"
            if any(r.get("microkernel_in_rounds_gflops") for r in recs.values())
            else f") against the micro-kernel alone in L1 ({micro:.1f} GFLOP/s).\n\n"
        )
        + table(
            [
                "layer",
                "whole ms",
                "bands ms",
                "filter packing ms",
                *(["threads' wait ms"] if waits else []),
                "rest GFLOP/s (of L1 kernel)",
                "path",
            ],
            rows,
        )
    )


def rounds_table(doc: dict) -> str:
    """What the machine gave during each layer's timing rounds, and im2win against it (runs since
    2026-12-02 put a short FMA probe and a short L1 micro-kernel probe into every layer's rounds)."""
    recs = {r["layer"]: r for r in doc["records"] if r["impl"] == "im2win"}
    if not recs or not all(r.get("peak_in_rounds_gflops") for r in recs.values()):
        return ""
    peak = doc["peak"]["gflops"]
    rows = []
    for layer, r in recs.items():
        fma, micro = r["peak_in_rounds_gflops"], r["microkernel_in_rounds_gflops"]
        rows.append(
            [
                layer,
                f"{fma:.1f} ({fma / peak:.0%})",
                f"{micro:.1f} ({micro / fma:.0%})",
                f"{r['gflops']:.1f}",
                f"{r['gflops'] / peak:.0%}",
                f"{r['gflops'] / fma:.0%}",
                f"{r['gflops'] / micro:.0%}",
            ]
        )
    return (
        "\n## The machine during each layer\n\nA shared machine's speed drifts within a run, so "
        "two probes take part in every layer's timing rounds as if they were implementations: "
        f"{doc['peak'].get('round_probe_method', 'short probes')}. Per layer: the best of each "
        f"(the FMA probe also as a share of the run's peak, {peak:.1f} GFLOP/s; the micro-kernel "
        "as a share of that FMA probe), and im2win's GFLOP/s as a share of the run's peak (the "
        "goal's measure), of the FMA probe in its own rounds and of the micro-kernel in its own "
        "rounds (what packing, bands, threads and tails leave of the micro-kernel's speed).\n\n"
        + table(
            [
                "layer",
                "FMA probe GFLOP/s (of run peak)",
                "L1 micro-kernel GFLOP/s (of that probe)",
                "im2win GFLOP/s",
                "of run peak",
                "of FMA probe in its rounds",
                "of micro-kernel in its rounds",
            ],
            rows,
        )
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
    """The CPU issue's goals (oneDNN's fastest path, the FMA peak, memory), each (goal, measured,
    met)."""
    layers, impls, g = grid(doc, "gflops")
    _, _, frac = grid(doc, "fraction_of_peak")
    _, _, mem = grid(doc, "extra_mem_bytes")
    gm = {i: geomean(g[(l, i)] for l in layers) for i in impls}
    out = []
    for peer, factor in (("torch_cl", 1.0), ("torch", 1.1)):
        if {"im2win", peer} <= gm.keys():
            ratio = gm["im2win"] / gm[peer]
            out.append(
                (
                    f"im2win geomean >= {factor:.1f}x {peer}",
                    f"{gm['im2win']:.1f} vs {gm[peer]:.1f} GFLOP/s ({ratio:.2f}x)",
                    ratio >= factor,
                )
            )
    if {"im2win", "torch"} <= gm.keys():
        behind = [l for l in layers if g[(l, "im2win")] < g[(l, "torch")]]
        out.append(
            (
                "im2win >= torch on every layer",
                "behind on " + ", ".join(behind) if behind else "every layer",
                not behind,
            )
        )
    big = [l for l in LARGE_3X3 if (l, "im2win") in frac]
    if big:
        worst = min(frac[(l, "im2win")] for l in big)
        _, _, during = grid(doc, "peak_in_rounds_gflops")
        measured = ", ".join(f"{l} {frac[(l, 'im2win')]:.0%}" for l in big)
        if all(during.get((l, "im2win")) for l in big):  # runs since 2026-12-02
            measured += "; of the FMA probe in each layer's own rounds: " + ", ".join(
                f"{l} {g[(l, 'im2win')] / during[(l, 'im2win')]:.0%}" for l in big
            )
        out.append(
            ("im2win >= 85% of the measured FMA peak on conv8-conv11", measured, worst >= 0.85)
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
            breakdown_table(doc),
            rounds_table(doc),
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
