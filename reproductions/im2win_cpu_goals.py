"""The CPU issue's goals, judged from a `repro run im2win-cpu` raw file (goals), and the same
goals in every comparable run (goals_history): one run is one sample of a shared machine."""

from __future__ import annotations

from pathlib import Path

from harness import results
from harness.peak import APART_NS
from reproductions.im2win_cpu_time import FAULTS_SHOWN, faulted
from reproductions.tables import against, geomean, grid, table

LARGE_3X3 = ("conv8", "conv9", "conv10", "conv11")  # the goal: >= 85% of the FMA peak on these
VERDICT = {True: "met", False: "NOT met", None: "n/a"}  # a goal's status, as the tables show it
GOAL_IMPLS = ("im2win", "torch", "torch_cl", "im2col_gemm")  # what the goals read
# im2win's geomean against its peers (the issue's), then its network form, the filter packed
# ahead and channels_last input made before the call, against oneDNN's on such tensors (beyond
# the issue, as torch_cl_net; oneDNN may still reorder its filter in the call)
RATIO_GOALS = (
    ("im2win", "torch_cl", 1.0),
    ("im2win", "torch", 1.1),
    ("im2win", "torch_cl_net", 1.0),
    ("im2win_packed", "torch_cl_net", 1.0),
)


def goals(doc: dict) -> list[tuple[str, str, bool | None]]:
    """The CPU issue's goals (oneDNN's fastest path, the FMA peak, memory), each (goal, measured,
    met)."""
    layers, impls, g = grid(doc, "gflops")
    _, _, frac = grid(doc, "fraction_of_peak")
    _, _, mem = grid(doc, "extra_mem_bytes")
    gm = {i: geomean(g[(l, i)] for l in layers) for i in impls}
    micro = (doc.get("microkernel") or {}).get("gflops")
    out = []
    for subject, peer, factor in RATIO_GOALS:
        if {subject, peer} <= gm.keys():
            ratio = gm[subject] / gm[peer]
            measured = f"{gm[subject]:.1f} vs {gm[peer]:.1f} GFLOP/s ({against(ratio, factor)}x)"
            if micro and subject == "im2win":  # how far this machine lets the goal go
                measured += (
                    f"; every layer at the micro-kernel's own rate in L1 ({micro:.1f}) would "
                    f"be {micro / gm[peer]:.2f}x"
                )
            out.append((f"{subject} geomean >= {factor:.1f}x {peer}", measured, ratio >= factor))
    _, _, trips = grid(doc, "round_trip_ns_in_rounds")

    def apart(missed: list[str]) -> str:
        """Which of the layers that missed ran with the two threads apart (no shared last-level
        cache; runs since 2026-12-02 time the threads' round trip in every layer's rounds)."""
        far = [l for l in missed if (trips.get((l, "im2win")) or {}).get("median", 0) > APART_NS]
        return f" (threads apart in the rounds of {', '.join(far)})" if far else ""

    if {"im2win", "torch"} <= gm.keys():
        behind = [l for l in layers if g[(l, "im2win")] < g[(l, "torch")]]
        out.append(
            (
                "im2win >= torch on every layer",
                "behind on " + ", ".join(behind) + apart(behind) if behind else "every layer",
                not behind,
            )
        )
    _, _, during = grid(doc, "peak_in_rounds_gflops")
    for subject in ("im2win", "im2win_packed"):
        big = [l for l in LARGE_3X3 if (l, subject) in frac]
        if not big:
            continue
        worst = min(frac[(l, subject)] for l in big)
        measured = ", ".join(f"{l} {against(100 * frac[(l, subject)], 85, 0)}%" for l in big)
        if all(during.get((l, subject)) for l in big):  # runs since 2026-12-02
            measured += "; of the FMA probe in each layer's own rounds: " + ", ".join(
                f"{l} {g[(l, subject)] / during[(l, subject)]:.0%}" for l in big
            )
        if all(frac.get((l, "torch")) for l in big):  # how fast the machine ran them for a peer
            measured += "; torch's own: " + ", ".join(f"{l} {frac[(l, 'torch')]:.0%}" for l in big)
        measured += apart([l for l in big if 100 * frac[(l, subject)] < 85])
        goal = f"{subject} >= 85% of the measured FMA peak on conv8-conv11"
        out.append((goal, measured, 100 * worst >= 85))
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
    rows = [[goal, measured, VERDICT[met]] for goal, measured, met in goals(doc)]
    return table(["goal", "measured", "status"], rows)


def run_level(doc: dict) -> str:
    """The x86 level a run held every implementation to (--isa); "native" for runs before it."""
    return doc["config"].get("isa", "native")


def _comparable(doc: dict) -> tuple:
    """What two runs must share for their goals to be read side by side: the scale, the x86 level
    held to, layers, the implementations the issue's goals read (GOAL_IMPLS; a run that also
    timed torch_cl_net, added later, is comparable with one that did not) and thread count, and
    the CPU (model name, family and model numbers)."""
    cfg, env = doc["config"], doc["environment"]
    cpu = env.get("cpu_details") or {}
    return (
        cfg.get("scale"),
        run_level(doc),
        tuple(cfg.get("layers") or ()),
        tuple(i for i in cfg.get("impls") or () if i in GOAL_IMPLS),
        cfg.get("threads"),
        env.get("cpu_model"),
        cpu.get("family"),
        cpu.get("model"),
    )


def goals_history(doc: dict, source: Path) -> str:
    """The goals in every run comparable with `doc` (_comparable) whose raw file lies in the
    folder of `source`, this one included, oldest first: on a shared machine one run is one
    sample, and a goal met in one run and missed in the next is not robust. Also per run: in how
    many layers' im2win rounds the two threads sat apart (a median round trip above APART_NS)."""
    key = _comparable(doc)
    runs = []  # (path, run, {goal: met})
    for path in results.run_files_in(Path(source).parent):
        try:
            other = results.load_run(path)
        except ValueError:
            continue  # not a run file: nothing to compare
        if other.get("experiment") == doc.get("experiment") and other["records"]:
            if _comparable(other) == key:
                runs.append((path, other, {goal: met for goal, _, met in goals(other)}))
    if len(runs) < 2:
        return ""
    names = list(dict.fromkeys(goal for _, _, verdicts in runs for goal in verdicts))
    met_count, judged = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    rows = []
    for path, other, verdicts in runs:
        for goal in names:
            met_count[goal] += verdicts.get(goal) is True
            judged[goal] += verdicts.get(goal) is not None
        _, _, trips = grid(other, "round_trip_ns_in_rounds")
        layers = [l for (l, impl), trip in trips.items() if impl == "im2win" and trip]
        apart = sum(trips[(l, "im2win")]["median"] > APART_NS for l in layers)
        git = other["environment"].get("git") or {}
        peak = (other.get("peak") or {}).get("gflops")
        _, _, gflops = grid(other, "gflops")
        torch_big = [gflops[(l, "torch")] for l in LARGE_3X3 if gflops.get((l, "torch"))]
        faults = faulted(other)
        rows.append(
            [
                f"`{path.name}`" + (" (this one)" if path.name == Path(source).name else ""),
                str(git.get("commit"))[:7] + (" (dirty)" if git.get("dirty") else ""),
                "shuffled" if "shuffled" in other.get("timing_method", "") else "fixed",
                f"{apart} of {len(layers)}" if layers else "n/a",
                f"{peak:.0f}" if peak else "n/a",
                f"{geomean(torch_big):.0f}" if torch_big else "n/a",
                "n/a" if faults is None else ", ".join(f"{i} {l}" for l, i, _ in faults) or "none",
                *[VERDICT[verdicts.get(goal)] for goal in names],
            ]
        )
    columns = ["run", "commit", "rounds' order", "threads apart", "FMA peak"]
    columns += ["torch on conv8-11", "page faults"]
    rows.append(
        ["met in", *[""] * (len(columns) - 1), *[f"{met_count[g]} of {judged[g]}" for g in names]]
    )
    return (
        "## The goals in every comparable run\n\n"
        f"Every raw file in `{relative(Path(source).parent)}` with this run's scale, x86 level, "
        "layers, implementations the issue's goals read (torch_cl_net aside), thread count and "
        "CPU model, oldest first, judged as this run is above; met in: of the runs that could "
        "judge the goal. "
        "One run is one sample of a shared machine: a goal met in some runs and not in others is "
        "not robust. Rounds' order: each round's calls in one fixed order (older runs) "
        "or shuffled anew each round (harness.timing.ROUND_ORDER_SEED). Threads "
        "apart: in how many layers' im2win rounds the two threads' median "
        f"round trip was above {APART_NS:.0f} ns (no shared last-level cache; n/a: runs before "
        "2026-12-02 did not time it). What the machine gave each run, so that a goal missed on a "
        "slow machine can be told from one missed by the code: its FMA peak (the best probe of "
        "the run, GFLOP/s) and torch's own geomean on conv8-conv11 (GFLOP/s), the same layers "
        "run by a peer that im2win's code does not touch. Page faults: the best rounds that took "
        f"{FAULTS_SHOWN} or more (their time includes faulting fresh pages in; n/a: not counted "
        "before 2026-12-03).\n\n" + table([*columns, *names], rows)
    )


def relative(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return Path(path).as_posix()
