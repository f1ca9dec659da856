"""Where im2win's CPU time goes, drawn from a `repro run im2win-cpu` raw file: the window transform
against the whole call, the breakdown of a call (bands, filter packing, the threads' wait, the
rest against the micro-kernel), the machine during each layer's timing rounds, and the
micro-kernel taken apart, its code and llvm-mca model on each x86 level, and the page faults of
the timed calls."""

from __future__ import annotations

from im2win.cpu import isa
from reproductions.tables import fmt, grid, table


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
        "the convolution (the kernel's own timers; on the whole window tensor's path, the transform "
        "as a whole, timed around it).\n\n" + table(["layer", *cols], rows)
    )


def breakdown_table(doc: dict) -> str:
    """Where im2win's time goes per layer (runs since 2026-12 time the filter packing too, runs
    since 2026-12-02 the threads' wait, runs since 2026-12-02 (evening) take every part from one
    call)."""
    recs = {r["layer"]: r for r in doc["records"] if r["impl"] == "im2win"}
    micro = (doc.get("microkernel") or {}).get("gflops")
    if not micro or not any(r.get("pack_ms") is not None for r in recs.values()):
        return ""
    waits = any(r.get("wait_ms") is not None for r in recs.values())
    one_call = all(r.get("phases_call_ms") is not None for r in recs.values())
    rows = []
    for layer, r in recs.items():
        total = r["phases_call_ms"] if one_call else r["min_ms"]
        bands, pack = r.get("transform_ms"), r.get("pack_ms")
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
        ", how long the first thread done waited for the last at the end (the threads' imbalance"
        + ("" if one_call else "; the median of the rounds")
        + ")"
        if waits
        else ""
    )
    call_text = (
        f"the whole call (the fastest of {doc['config']['repeat']} calls with the kernel's phase "
        "timers, after the layer's timing rounds; every part below is from that call)"
        if one_call
        else "the whole call (best round; each part the least of its calls)"
    )
    return (
        f"\n## Where im2win's time goes\n\nPer layer: {call_text}, the time spent "
        "building window bands (the slowest thread's, from the kernel's own timers; on the whole "
        "window tensor's path, the transform as a whole, timed around it) and packing the filter (the "
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
    # runs since 2026-12-02 (afternoon) also time the threads' round trip in every layer's rounds
    trips = any(r.get("round_trip_ns_in_rounds") for r in recs.values())
    rows = []
    for layer, r in recs.items():
        fma, micro = r["peak_in_rounds_gflops"], r["microkernel_in_rounds_gflops"]
        rows.append(
            [
                layer,
                f"{fma:.1f} ({fma / peak:.0%})",
                f"{micro:.1f} ({micro / fma:.0%})",
                *([_round_trip(r.get("round_trip_ns_in_rounds"))] if trips else []),
                f"{r['gflops']:.1f}",
                f"{r['gflops'] / peak:.0%}",
                f"{r['gflops'] / fma:.0%}",
                f"{r['gflops'] / micro:.0%}",
            ]
        )
    trip_text = (
        f" The threads' round trip: {doc['peak']['round_trip_method']}. Data one thread writes "
        "and the other reads (a shared window tensor, the filter packed once, output lines) "
        "costs more in rounds where it is long."
        if trips
        else ""
    )
    return (
        "\n## The machine during each layer\n\nA shared machine's speed drifts within a run, so "
        "short probes take part in every layer's timing rounds as if they were implementations: "
        f"{doc['peak'].get('round_probe_method', 'short probes')}. Per layer: the best of each "
        f"(the FMA probe also as a share of the run's peak, {peak:.1f} GFLOP/s; the micro-kernel "
        "as a share of that FMA probe), and im2win's GFLOP/s as a share of the run's peak (the "
        "goal's measure), of the FMA probe in its own rounds and of the micro-kernel in its own "
        "rounds (what packing, bands, threads and tails leave of the micro-kernel's speed)."
        + trip_text
        + "\n\n"
        + table(
            [
                "layer",
                "FMA probe GFLOP/s (of run peak)",
                "L1 micro-kernel GFLOP/s (of that probe)",
                *(["threads' round trip ns, median (min-max)"] if trips else []),
                "im2win GFLOP/s",
                "of run peak",
                "of FMA probe in its rounds",
                "of micro-kernel in its rounds",
            ],
            rows,
        )
    )


def parts_table(doc: dict) -> str:
    """The micro-kernel's main loop taken apart (runs since 2026-12-03 evening)."""
    parts = doc.get("microkernel_parts")
    if not parts:
        return ""
    if "skipped" in parts:
        return f"## The micro-kernel taken apart\n\n{parts['skipped']}.\n"
    gflops, probe = parts["gflops"], parts["gflops"]["fma_probe"]
    rows = [
        [what, f"{gflops[name]:.1f}", f"{gflops[name] / probe:.0%}"]
        for name, what in parts["parts"].items()
    ]
    return (
        "## The micro-kernel taken apart\n\n"
        "Its main loop on its L1-resident data, one kind of instruction added at a time "
        f"(`im2win_ukernel_part_gflops`): {parts['method']}. Each row adds to the one above; "
        "where the GFLOP/s falls, that kind of instruction is what holds the micro-kernel (and so "
        "each layer) below the FMA probe on this CPU.\n\n"
        + table(["loop", "GFLOP/s", "of the FMA probe"], rows)
    )


def _round_trip(ns: dict | None) -> str:
    if not ns:
        return "n/a (one thread)"
    return f"{ns['median']:.0f} ({ns['min']:.0f}-{ns['max']:.0f})"


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
        "One pass of the micro-kernel's main loop (one reduction step of an M-pixel tile a pass, "
        "or two in the loops that run on Intel CPUs and in the two-panel loop), from "
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


FAULTS_SHOWN = 256  # minor page faults in a best round worth naming: 1 MiB of 4 KiB pages


def faulted(doc: dict) -> list[tuple[str, str, int]] | None:
    """(layer, impl, faults) of every best round that took FAULTS_SHOWN page faults or more; None
    for runs that did not count them (before 2026-12-03)."""
    if not any("faults_in_best" in r for r in doc["records"]):
        return None
    return [
        (r["layer"], r["impl"], r["faults_in_best"])
        for r in doc["records"]
        if (r.get("faults_in_best") or 0) >= FAULTS_SHOWN
    ]


def faults_line(doc: dict) -> str:
    """The implementations whose best round took page faults: the allocator handed them fresh
    pages, and faulting those in is part of their time."""
    found = faulted(doc)
    if found is None:
        return ""
    if not found:
        return (
            f"\nNo implementation's best round took {FAULTS_SHOWN} minor page faults or more: "
            "every time above is of buffers the allocator had handed out before.\n"
        )
    return (
        "\nPage faults in the best round (minor faults of the process during that call, "
        "getrusage): there the allocator handed the implementation fresh pages, and faulting "
        "them in is part of its time, although the timing allocator keeps freed memory: "
        + ", ".join(f"{layer} {impl} {n:,}" for layer, impl, n in found)
        + ".\n"
    )
