"""Markdown-table helpers shared by the reproductions' render functions."""

from __future__ import annotations

import math
import statistics


def geomean(values) -> float:
    """Geometric mean of the values that are present and non-zero (nan if none)."""
    values = [v for v in values if v]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def ratio(a, b) -> float | None:
    """a / b, or None where either is missing or zero."""
    return a / b if a and b else None


def grid(doc: dict, key: str) -> tuple[list[str], list[str], dict]:
    """(layers, impls, {(layer, impl): record[key]}) of a run file, in record order."""
    layers = list(dict.fromkeys(r["layer"] for r in doc["records"]))
    impls = list(dict.fromkeys(r["impl"] for r in doc["records"]))
    return layers, impls, {(r["layer"], r["impl"]): r.get(key) for r in doc["records"]}


def fmt(value, spec: str) -> str:
    """`value` formatted with `spec`, or "n/a" when it is missing."""
    return "n/a" if value is None else format(value, spec)


def against(value, goal: float, digits: int = 2) -> str:
    """A number judged against a goal, with `digits` decimals, or as many more as it takes for the
    number shown to fall on the same side of the goal as the value (1.097 against 1.1 showed as
    1.10 beside "NOT met", 84.8% against 85% as 85%); "n/a" when it is missing."""
    if value is None:
        return "n/a"
    for shown in range(digits, 7):
        if (round(value, shown) >= goal) == (value >= goal):
            return f"{value:.{shown}f}"
    return f"{value:.6f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
