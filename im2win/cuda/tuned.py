"""Tuned tile configurations: the best found per (GPU architecture, layer shape), as JSON files.

Written by the autotuner (im2win/cuda/autotune.py), read by im2win.cuda.runtime.conv2d. Default
folder: <cache>/tuned/<arch>.json (the native-build cache, $IM2WIN_CACHE_DIR).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness.native import cache_dir
from harness.results import atomic_write
from im2win.cuda.config import TileConfig
from im2win.shapes import ConvShape


def tuned_path(arch: str, folder: Path | None = None) -> Path:
    return (folder or cache_dir() / "tuned") / f"{arch}.json"


def shape_key(shape: ConvShape) -> str:
    return (
        f"n{shape.n}_c{shape.c}_h{shape.h}_w{shape.w}_k{shape.k}_r{shape.r}_s{shape.s}"
        f"_st{shape.stride[0]}x{shape.stride[1]}_p{shape.padding[0]}x{shape.padding[1]}"
    )


def load_tuned(arch: str, shape: ConvShape, folder: Path | None = None) -> TileConfig | None:
    """The stored best configuration for `shape` on `arch`, if a search has produced one."""
    path = tuned_path(arch, folder)
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(shape_key(shape))
    return TileConfig(**entry["config"]) if entry else None


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
