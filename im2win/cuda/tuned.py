"""Tuned tile configurations: the best found per (GPU architecture, layer shape), as JSON files.

Written by the autotuner (im2win/cuda/autotune.py) or, from a GPU run of `repro run im2win-gpu`,
by `python -m im2win.cuda.tuned RAW` (each layer's fastest correct variant of the ablation, already
measured there); read by im2win.cuda.runtime.conv2d. Looked up
first in this machine's own searches, <cache>/tuned/<arch>.json (the native-build cache,
$IM2WIN_CACHE_DIR), then in the configurations shipped with the package,
im2win/cuda/tuned_configs/<arch>.json (written by `python -m im2win.cuda.autotune --ship` on a GPU
of that architecture, and committed with the run that measured them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from harness.native import cache_dir
from harness.results import atomic_write, load_run, run_files
from im2win.cuda.config import VARIANTS, TileConfig
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
    source: str = "autotune",
) -> Path:
    path = tuned_path(arch, folder)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[shape_key(shape)] = {
        "config": dataclasses.asdict(config),
        "time_ms": time_ms,
        "evaluations": evaluations,
        "source": source,
    }
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def fastest_variants(doc: dict) -> dict[str, tuple[ConvShape, str, float]]:
    """Per layer of an im2win-gpu run file: (shape, variant, best ms) of the fastest ablation
    variant whose output passed the FP32 check (`im2win` itself counts as the variant it is only
    where it ran DEFAULT)."""
    best: dict[str, tuple[ConvShape, str, float]] = {}
    for r in doc["records"]:
        impl = r.get("impl", "")
        name = impl.removeprefix("im2win_") if impl.startswith("im2win_") else None
        if impl == "im2win" and r.get("tile_source") == "default":
            name = "im2win"
        if name not in VARIANTS or not r.get("correct") or r.get("min_ms") is None:
            continue
        if r["layer"] not in best or r["min_ms"] < best[r["layer"]][2]:
            best[r["layer"]] = (ConvShape.from_dict(r), name, r["min_ms"])
    return best


def store_fastest(
    doc: dict, folder: Path | None, run_name: str
) -> dict[str, tuple[ConvShape, str, float]]:
    """Store each layer's fastest variant of the run `run_name` (fastest_variants) for the run's
    GPU architecture in `folder` (None: this machine's; SHIPPED: the package's), except where
    `folder` already holds a configuration measured faster (an autotuner's). Returns what was
    stored."""
    arch = doc["config"]["device_arch"]
    stored = {}
    for layer, (shape, name, ms) in fastest_variants(doc).items():
        kept = _entry(tuned_path(arch, folder), shape)
        if kept and kept.get("time_ms", float("inf")) <= ms:
            continue
        source = f"fastest of the ablation in {run_name} ({name})"
        store(arch, shape, VARIANTS[name], ms, len(VARIANTS), folder, source)
        stored[layer] = (shape, name, ms)
    return stored


def main(argv: list[str] | None = None) -> int:
    """python -m im2win.cuda.tuned RAW [--ship]."""
    parser = argparse.ArgumentParser(
        prog="python -m im2win.cuda.tuned",
        description="Make each layer's fastest correct variant in an im2win-gpu run file (its "
        "ablation, all measured side by side there) the tuned configuration for that GPU "
        "architecture: for this machine, or with --ship for the package. Needs no GPU.",
    )
    parser.add_argument(
        "raw",
        type=Path,
        nargs="?",
        help="results/raw/im2win-gpu/<run>.json (default: the newest there)",
    )
    parser.add_argument(
        "--ship", action="store_true", help="write im2win/cuda/tuned_configs/<arch>.json"
    )
    args = parser.parse_args(argv)
    if args.raw is None:
        runs = run_files("im2win-gpu")
        if not runs:
            parser.error("no im2win-gpu run file in results/raw/im2win-gpu: give one")
        args.raw = runs[-1]
    try:
        doc = load_run(args.raw)
        best = store_fastest(doc, SHIPPED if args.ship else None, args.raw.name)
    except (ValueError, KeyError) as exc:
        raise SystemExit(
            f"tuned: cannot use {args.raw} ({exc}): give an im2win-gpu run file"
        ) from None
    for layer, (_, name, ms) in best.items():
        print(f"{layer}: {name} ({ms:.3f} ms)")
    if not best:
        print("no layer's variant beat the configuration already stored")
    arch = doc["config"]["device_arch"]
    print(f"stored in {tuned_path(arch, SHIPPED if args.ship else None)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
