"""The tables and figures of `repro run supersam-subnets`, drawn from its raw file: SuperSAM's
table (test mIoU, size, GFLOPs, latency), whether the paper's claim holds, the OpenTuner-versus-
random comparison, and the Pareto, convergence and latency figures."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from harness import results
from reproductions.tables import fmt
from supersam_min.analysis import (
    compare_searches,
    convergence,
    curve_quantiles,
    pareto_front,
    reach_summary,
)


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = doc["config"]
    table = [r for r in doc["records"] if r["kind"] == "table"]
    pre = next(r for r in table if r["row"].startswith("pretrained"))
    largest = next(r for r in table if r["row"] == "largest subnet")
    full_params = largest["parameters"]
    lines = [
        f"# SuperSAM subnets ({cfg['model']}, scale {cfg['scale']})\n",
        f"From `{source.name}` ({doc['created_utc']}, `{doc['command']}`); "
        f"{cfg['threads']} threads, device {cfg['device']}; whole run {doc['wall_s']:.0f} s.\n",
        f"Test data `{cfg['data']['test']}`; searches on `{cfg['data']['val']}` "
        f"({cfg['evaluations']} evaluations each, objective: mean of point and box mIoU). "
        "mIoU: per object, best of SAM's 3 masks for a point, the single mask for the exact box. "
        "Latency: the image encoder on one image, best of the interleaved rounds.\n",
        "The baseline column scores the same subnet cut from the plain fine-tuned model (the full "
        "model fine-tuned on the same data for the same steps without the supernet, MLPs in the "
        "same Wanda order): what supernet training gains over pruning a fine-tuned model.\n",
        "| model | params (M) | % of full | encoder GFLOPs | latency (ms) | mIoU point | "
        "mIoU box | vs pretrained (point / box) | same subnet, plain fine-tuning (point / box) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        if "skipped" in r:
            lines.append(f"| {r['row']} | - | - | - | - | - | - | - | no subnet: {r['skipped']} |")
            continue
        d_pt, d_box = r["miou_point"] - pre["miou_point"], r["miou_box"] - pre["miou_box"]
        plain = (
            f"{r['plain_miou_point']:.3f} / {r['plain_miou_box']:.3f}"
            if "plain_miou_point" in r
            else "-"
        )
        lines.append(
            f"| {r['row']} | {r['parameters'] / 1e6:.3f} | {r['parameters'] / full_params:.1%} | "
            f"{fmt(r['encoder_gflops'], '.3f')} | {fmt(r.get('min_ms'), '.1f')} | {r['miou_point']:.3f} | "
            f"{r['miou_box']:.3f} | {d_pt:+.3f} / {d_box:+.3f} | {plain} |"
        )
    lines += ["", claim_sentence(table, pre, largest, full_params), ""]
    # the search comparison
    budget = cfg["budgets"][0]
    curves = convergence(
        [r for r in doc["records"] if r["kind"] == "trial" and r["budget"] == budget]
    )
    reach = reach_summary(curves)
    if reach["target"] is not None:
        lines += [
            f"## OpenTuner versus random search (budget <= {budget:.0%} of the parameters)\n",
            f"Best validation score found by any run: {reach['target']:.4f}. Evaluations each "
            "run needed to reach it (- : not within its evaluations):\n",
            "| method | " + " | ".join(f"seed {s}" for s in cfg["seeds"]) + " | median |",
            "|---" * (len(cfg["seeds"]) + 2) + "|",
        ]
        for method, m in reach["methods"].items():
            cells = [str(m["per_seed"].get(s) or "-") for s in cfg["seeds"]]
            med = "-" if math.isinf(m["median"]) else f"{m['median']:g}"
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {med} |")
        ot, rs = (
            reach["methods"].get(k, {}).get("median", math.inf) for k in ("opentuner", "random")
        )
        verdict = "met" if ot < rs else "NOT met"
        lines.append(
            f"\nGoal (OpenTuner reaches the best configuration in fewer evaluations than random "
            f"search, median over {len(cfg['seeds'])} seeds; a run that never reaches it counts as "
            f"more than {cfg['evaluations']}): {verdict}. OpenTuner runs its default technique "
            "(the AUC-bandit ensemble AUCBanditMetaTechniqueA); one seed takes one path in "
            "every process (harness/tuner.py). Every search scores subnets with "
            "the same validation prompts (--eval-seed 0), so scores compare across seeds.\n"
        )
        lines += search_comparison(curves, cfg["evaluations"])
    lines += [
        "## Figures\n",
        "- `pareto.png`: every evaluated subnet (parameters vs validation score), the Pareto "
        "front, the budgets and the search's picks",
        "- `convergence.png`: best validation score vs evaluations, OpenTuner and random search",
        "- `latency.png`: encoder latency vs parameters (Pareto-front subnets, largest, smallest)",
        "",
        "## Stages\n",
        "| stage | command | wall (s) | reused |",
        "|---|---|---|---|",
    ]
    for r in doc["records"]:
        if r["kind"] == "stage":
            lines.append(
                f"| {r['stage']} | `supersam {' '.join(r['argv'])}` | {r['wall_s']:.0f} | "
                f"{'yes (commit ' + str(r['git'].get('commit', '?'))[:7] + ')' if r['reused'] else 'no'} |"
            )
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(lines) + "\n")
    paths = [path]
    paths.append(_plot_pareto(plt, doc, out_dir / "pareto.png", full_params))
    paths.append(
        _plot_convergence(plt, curves, budget, cfg["evaluations"], out_dir / "convergence.png")
    )
    paths.append(_plot_latency(plt, doc, table, out_dir / "latency.png", full_params))
    return paths


def search_comparison(curves: dict, evaluations: int) -> list[str]:
    """The median best-so-far score (and its spread over seeds) at a few evaluation counts, and the
    verdict of a rank test on the area under each run's curve."""
    if not {"opentuner", "random"} <= set(curves):
        return []
    marks = sorted({max(1, evaluations // 8), evaluations // 4, evaluations // 2, evaluations})
    lines = [
        "Best validation score so far, median over seeds [25th-75th percentile]:\n",
        "| method | runs | " + " | ".join(f"after {n}" for n in marks) + " |",
        "|---" * (len(marks) + 2) + "|",
    ]
    for method in ("opentuner", "random"):
        q = curve_quantiles(curves[method], evaluations)
        cells = [f"{q[n - 1][1]:.4f} [{q[n - 1][0]:.4f}-{q[n - 1][2]:.4f}]" for n in marks]
        lines.append(f"| {method} | {len(curves[method])} | " + " | ".join(cells) + " |")
    cmp = compare_searches(curves, "opentuner", "random", evaluations)
    p = "-" if cmp["p_value"] is None else f"{cmp['p_value']:.3g}"
    lines.append(
        "\nEach run summarised by the mean of its best-so-far curve over "
        f"{evaluations} evaluations (high when it finds good subnets early): median OpenTuner "
        f"{statistics.median(cmp['area']['opentuner']):.4f}, random "
        f"{statistics.median(cmp['area']['random']):.4f}; two-sided Mann-Whitney U test "
        f"p = {p}. **Verdict: {cmp['verdict']}.**\n"
    )
    return lines


def claim_sentence(table: list[dict], pre: dict, largest: dict, full_params: int) -> str:
    """Whether the paper's claim holds here, from the numbers: a subnet >= 30% smaller that scores
    >= the pretrained model and >= 97% of the trained largest subnet (both prompts)."""
    candidates = [r for r in table if "skipped" not in r and r["parameters"] <= 0.7 * full_params]
    good = [
        r
        for r in candidates
        if all(
            r[f"miou_{p}"] >= pre[f"miou_{p}"] and r[f"miou_{p}"] >= 0.97 * largest[f"miou_{p}"]
            for p in ("point", "box")
        )
    ]
    if not candidates:
        return "No subnet at least 30% smaller was evaluated, so the claim is untested here."
    best = max(good or candidates, key=lambda r: r["miou_box"] + r["miou_point"])
    detail = (
        f"{best['row']} ({best['parameters'] / full_params:.0%} of the parameters): point "
        f"{best['miou_point']:.3f} / box {best['miou_box']:.3f} against the pretrained model's "
        f"{pre['miou_point']:.3f} / {pre['miou_box']:.3f}, and "
        f"{best['miou_point'] / largest['miou_point']:.1%} / {best['miou_box'] / largest['miou_box']:.1%} "
        "of the trained largest subnet's"
    )
    if good:
        return (
            f"**The claim holds at this scale**: {len(good)} of the table's rows at least 30% smaller "
            f"match or beat the pretrained model with both prompts; the best is {detail}. "
            "Goal (>= pretrained and >= 97% of the largest subnet): met."
        )
    return (
        f"**The claim does not hold at this scale**: no subnet at least 30% smaller scores "
        f">= the pretrained model and >= 97% of the largest subnet with both prompts; the best "
        f"is {detail}. Goal: NOT met."
    )


def _finish(plt, fig, ax, path: Path) -> Path:
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_pareto(plt, doc, path, full_params):
    pts = {}
    for r in doc["records"]:
        if r["kind"] == "trial" and r.get("score") is not None:
            pts[json.dumps(r["subnet"])] = (r["parameters"] / full_params, r["score"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if pts:
        xs, ys = zip(*pts.values(), strict=True)
        ax.scatter(xs, ys, s=12, alpha=0.5, label="evaluated subnets")
        front = pareto_front(list(pts.values()))
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="k",
            lw=1,
            label="Pareto front",
        )
    picks = [
        r
        for r in doc["records"]
        if r["kind"] == "table" and r.get("budget") is not None and "skipped" not in r
    ]
    for r in picks:
        key = json.dumps(r.get("supernet_subnet"))
        if key in pts:
            ax.scatter(*pts[key], marker="*", s=160, color="C3", zorder=3)
            ax.annotate(
                f"pick <= {r['budget']:.0%}",
                pts[key],
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
            )
    for b in doc["config"]["budgets"]:
        ax.axvline(b, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("parameters (fraction of the full model)")
    ax.set_ylabel("validation score (mean of point and box mIoU)")
    ax.set_title("Subnets evaluated by all searches")
    return _finish(plt, fig, ax, path)


def _plot_convergence(plt, curves, budget, evaluations, path):
    """Median best-so-far curve per method with its 25th-75th percentile band over seeds."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = range(1, evaluations + 1)
    for i, (method, per) in enumerate(sorted(curves.items())):
        q = curve_quantiles(per, evaluations)
        ax.plot(xs, [v[1] for v in q], color=f"C{i}", lw=1.6, label=f"{method} ({len(per)} runs)")
        ax.fill_between(xs, [v[0] for v in q], [v[2] for v in q], color=f"C{i}", alpha=0.2)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best validation score so far")
    ax.set_title(f"Search convergence, parameters <= {budget:.0%}: median, 25th-75th pct.")
    return _finish(plt, fig, ax, path)


def _plot_latency(plt, doc, table, path, full_params):
    lat = [r for r in doc["records"] if r["kind"] == "latency"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if lat:
        ax.scatter(
            [r["parameters"] / full_params for r in lat],
            [r["latency_ms"] for r in lat],
            s=18,
            label="Pareto-front subnets, largest, smallest",
        )
    for r in table:
        if "min_ms" in r:
            ax.scatter(r["parameters"] / full_params, r["min_ms"], marker="x", color="C3")
            ax.annotate(
                r["row"],
                (r["parameters"] / full_params, r["min_ms"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ax.set_xlabel("parameters (fraction of the full model)")
    ax.set_ylabel("image encoder latency (ms, best round)")
    ax.set_title("Latency versus size of extracted subnets")
    return _finish(plt, fig, ax, path)
