"""Tuned tile configurations: the best found per (GPU architecture, layer shape), as JSON files.

Written by the autotuner (im2win/cuda/autotune.py), read by im2win.cuda.runtime.conv2d. Looked up
first in this machine's own searches, <cache>/tuned/<arch>.json (the native-build cache,
$IM2WIN_CACHE_DIR), then in the configurations shipped with the package,
im2win/cuda/tuned_configs/<arch>.json (written by `python -m im2win.cuda.autotune --ship` on a GPU
of that architecture, and committed with the run that measured them).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness.native import cache_dir
from harness.results import atomic_write
from im2win.cuda.config import TileConfig
from im2win.shapes import ConvShape

SHIPPED = Path(__file__).with_name("tuned_configs")


def tuned_path(arch: str, folder: Path | None = None) -> Path:
    return (folder or cache_dir() / "tuned") / f"{arch}.json"


def shape_key(shape: ConvShape) -> str:
    return (
        f"n{shape.n}_c{shape.c}_h{shape.h}_w{shape.w}_k{shape.k}_r{shape.r}_s{shape.s}"
        f"_st{shape.stride[0]}x{shape.stride[1]}_p{shape.padding[0]}x{shape.padding[1]}"
    )


def _entry(path: Path, shape: ConvShape) -> dict | None:
    return json.loads(path.read_text()).get(shape_key(shape)) if path.is_file() else None


def tuned_source(arch: str, shape: ConvShape, folder: Path | None = None) -> str | None:
    """Where the configuration for `shape` on `arch` comes from: "local" (this machine's search),
    "shipped" (the package's), or None (no search has tuned it: DEFAULT). With `folder`, only
    that folder is looked in ("local")."""
    if _entry(tuned_path(arch, folder), shape):
        return "local"
    if folder is None and _entry(tuned_path(arch, SHIPPED), shape):
        return "shipped"
    return None


def load_tuned(arch: str, shape: ConvShape, folder: Path | None = None) -> TileConfig | None:
    """The best configuration a search stored for `shape` on `arch` (see tuned_source)."""
    source = tuned_source(arch, shape, folder)
    if source is None:
        return None
    entry = _entry(tuned_path(arch, folder if source == "local" else SHIPPED), shape)
    return TileConfig(**entry["config"])


def store(
    arch: str,
    shape: ConvShape,
    config: TileConfig,
    time_ms: float,
    evaluations: int,
    folder: Path | None,
) -> Path:
    path = tuned_path(arch, folder)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[shape_key(shape)] = {
        "config": dataclasses.asdict(config),
        "time_ms": time_ms,
        "evaluations": evaluations,
    }
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path
