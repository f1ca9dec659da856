"""Analyses of subnet searches: the Pareto front of size against score, best-so-far curves per
method and seed, and how many evaluations each search needed to reach the best score found."""

from __future__ import annotations

import math
import statistics


def pareto_front(points: list[tuple]) -> list[tuple]:
    """The points (size, score, ...) not beaten by a smaller-or-equal one with a higher score,
    by ascending size."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


def best_so_far(scores: list[float]) -> list[float]:
    """The running maximum: entry i is the best of scores[: i + 1]."""
    best, out = -math.inf, []
    for score in scores:
        best = max(best, score)
        out.append(best)
    return out


def convergence(trials: list[dict]) -> dict[str, dict[int, list[float]]]:
    """Per method, per seed: the best score after each evaluation, from trials carrying method,
    seed, evaluation (None: not evaluated) and score."""
    runs: dict[str, dict[int, list[tuple]]] = {}
    for t in trials:
        if t["evaluation"] is not None:
            runs.setdefault(t["method"], {}).setdefault(t["seed"], []).append(
                (t["evaluation"], t["score"])
            )
    return {
        method: {seed: best_so_far([s for _, s in sorted(pts)]) for seed, pts in per.items()}
        for method, per in runs.items()
    }


def reach_summary(curves: dict) -> dict:
    """Evaluations each run needed to reach the best score any run found (None: never); medians."""
    target = max((c[-1] for per in curves.values() for c in per.values() if c), default=None)
    out = {"target": target, "methods": {}}
    for method, per in curves.items():
        needs = {}
        for s, c in per.items():
            needs[s] = next((i + 1 for i, v in enumerate(c) if v >= target), None)
        finite = [n if n is not None else math.inf for n in needs.values()]
        out["methods"][method] = {"per_seed": needs, "median": statistics.median(finite)}
    return out


def _padded(curve: list[float], length: int) -> list[float]:
    """A best-so-far curve carried to `length` evaluations (a search that stopped keeps its best)."""
    return curve + [curve[-1]] * (length - len(curve)) if curve else []


def curve_quantiles(per_seed: dict[int, list[float]], length: int) -> list[tuple[float, ...]]:
    """(25th, 50th, 75th percentile) over seeds of the best score after each of `length`
    evaluations: the median curve and its spread."""
    import numpy as np

    rows = np.array([_padded(c, length) for c in per_seed.values() if c])
    return [tuple(float(v) for v in np.percentile(rows[:, i], (25, 50, 75))) for i in range(length)]


def compare_searches(
    curves: dict[str, dict[int, list[float]]], first: str, second: str, length: int
) -> dict:
    """Which search method finds better subnets sooner, over seeds.

    Each run is summarised by the mean of its best-so-far curve over `length` evaluations (the area
    under it: high when it finds good subnets early), and the two methods' runs are compared with a
    two-sided Mann-Whitney U test. Verdict: `first` or `second` when p < 0.05 (the one with the
    higher median area), else "no significant difference".
    """
    from scipy.stats import mannwhitneyu

    area = {
        m: [statistics.fmean(_padded(c, length)) for c in curves.get(m, {}).values() if c]
        for m in (first, second)
    }
    if min(len(a) for a in area.values()) < 2:
        return {"area": area, "p_value": None, "verdict": "too few runs to compare"}
    p = float(mannwhitneyu(area[first], area[second], alternative="two-sided").pvalue)
    better = first if statistics.median(area[first]) > statistics.median(area[second]) else second
    return {
        "area": area,
        "p_value": p,
        "verdict": better if p < 0.05 else "no significant difference",
    }
