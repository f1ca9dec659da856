"""Markdown-table helpers shared by the reproductions' render functions."""

from __future__ import annotations

import math
import statistics


def geomean(values) -> float:
    """Geometric mean of the values that are present and non-zero (nan if none)."""
    values = [v for v in values if v]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else float("nan")


def grid(doc: dict, key: str) -> tuple[list[str], list[str], dict]:
    """(layers, impls, {(layer, impl): record[key]}) of a run file, in record order."""
    layers = list(dict.fromkeys(r["layer"] for r in doc["records"]))
    impls = list(dict.fromkeys(r["impl"] for r in doc["records"]))
    return layers, impls, {(r["layer"], r["impl"]): r.get(key) for r in doc["records"]}


def fmt(value, spec: str) -> str:
    """`value` formatted with `spec`, or "n/a" when it is missing."""
    return "n/a" if value is None else format(value, spec)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
