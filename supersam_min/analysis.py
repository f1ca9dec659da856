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
