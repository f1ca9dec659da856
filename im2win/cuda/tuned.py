"""Tuned tile configurations: the best found per (GPU architecture, layer shape), as JSON files.

Written by the autotuner (im2win/cuda/autotune.py) or, from a GPU run of `repro run im2win-gpu`,
by `python -m im2win.cuda.tuned RAW` (each layer's fastest correct variant of the ablation, already
measured there, and the architecture's default: the variant fastest over all of the run's layers);
read by im2win.cuda.runtime.conv2d. Looked up first in this machine's own searches,
<cache>/tuned/<arch>.json (the native-build cache, $IM2WIN_CACHE_DIR), then in the configurations
shipped with the package, im2win/cuda/tuned_configs/<arch>.json (written by `python -m
im2win.cuda.autotune --ship` or `python -m im2win.cuda.tuned RAW --ship` on a GPU of that
architecture, and committed with the run that measured them). A shape no search has tuned takes
the architecture's default where a run stored one, else config.DEFAULT.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
from pathlib import Path

from harness.native import cache_dir
from harness.results import atomic_write, load_run, run_files
from im2win.cuda.config import VARIANTS, TileConfig
from im2win.shapes import ConvShape

SHIPPED = Path(__file__).with_name("tuned_configs")
ARCH_DEFAULT = "default"  # the key of the architecture's default (the others are shape_key's)
# the fewest layers a run must have measured for its fastest variant over them to become the
# architecture's default
MIN_DEFAULT_LAYERS = 4


def tuned_path(arch: str, folder: Path | None = None) -> Path:
    return (folder or cache_dir() / "tuned") / f"{arch}.json"


def shape_key(shape: ConvShape) -> str:
    return (
        f"n{shape.n}_c{shape.c}_h{shape.h}_w{shape.w}_k{shape.k}_r{shape.r}_s{shape.s}"
        f"_st{shape.stride[0]}x{shape.stride[1]}_p{shape.padding[0]}x{shape.padding[1]}"
    )


@functools.lru_cache(maxsize=16)
def _parsed(path: Path, inode: int, mtime_ns: int, size: int) -> dict:
    return json.loads(path.read_text())


def _entry(path: Path, key: str) -> dict | None:
    """The entry `key` of a tuned-configurations file, None where either is missing. Each version
    of a file is parsed once (conv2d looks its configuration up on every call)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _parsed(path, stat.st_ino, stat.st_mtime_ns, stat.st_size).get(key)


def version(arch: str) -> tuple:
    """Which versions of this machine's and the package's files for `arch` stored() would read
    now (inode, mtime and size of each, None where missing): a cache of what they say stays valid
    while this does not change."""
    out = []
    for path in (tuned_path(arch), tuned_path(arch, SHIPPED)):
        try:
            stat = path.stat()
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


def _lookup(arch: str, shape: ConvShape, folder: Path | None) -> tuple[str, dict] | None:
    """(source, entry) of the configuration for `shape` on `arch`, in this order: this machine's
    search of the shape ("local"), the package's ("shipped"), this machine's architecture default
    ("local (architecture)"), the package's ("shipped (architecture)"). With `folder`, only that
    folder is looked in (as "local")."""
    places = [("local", tuned_path(arch, folder))]
    if folder is None:
        places.append(("shipped", tuned_path(arch, SHIPPED)))
    for key, suffix in ((shape_key(shape), ""), (ARCH_DEFAULT, " (architecture)")):
        for source, path in places:
            entry = _entry(path, key)
            if entry:
                return source + suffix, entry
    return None


def stored(
    arch: str, shape: ConvShape, folder: Path | None = None
) -> tuple[str, TileConfig] | None:
    """(where it comes from, the configuration) stored for `shape` on `arch`, or None (no search or
    run stored one: config.DEFAULT). Where: "local" (this machine's search), "shipped" (the
    package's), "local (architecture)" or "shipped (architecture)" (the architecture's default,
    for a shape neither has tuned). With `folder`, only that folder is looked in (as "local")."""
    found = _lookup(arch, shape, folder)
    return (found[0], TileConfig(**found[1]["config"])) if found else None


def _write(arch: str, key: str, entry: dict, folder: Path | None) -> Path:
    path = tuned_path(arch, folder)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = entry
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    _parsed.cache_clear()  # a rewrite within the file clock's tick must not read as the old one
    return path


def store(
    arch: str,
    shape: ConvShape,
    config: TileConfig,
    time_ms: float,
    evaluations: int,
    folder: Path | None,
    source: str = "autotune",
) -> Path:
    entry = {
        "config": dataclasses.asdict(config),
        "time_ms": time_ms,
        "evaluations": evaluations,
        "source": source,
    }
    return _write(arch, shape_key(shape), entry, folder)


def _variant_times(doc: dict) -> dict[str, tuple[ConvShape, dict[str, float]]]:
    """Per layer of an im2win-gpu run file: its shape and the best ms of each ablation variant
    whose output passed the FP32 check (`im2win` itself counts as the variant it is only where it
    ran DEFAULT), in the order of the records."""
    layers: dict[str, tuple[ConvShape, dict[str, float]]] = {}
    for r in doc["records"]:
        impl = r.get("impl", "")
        name = impl.removeprefix("im2win_") if impl.startswith("im2win_") else None
        if impl == "im2win" and r.get("tile_source") == "default":
            name = "im2win"
        if name not in VARIANTS or not r.get("correct") or r.get("min_ms") is None:
            continue
        _, times = layers.setdefault(r["layer"], (ConvShape.from_dict(r), {}))
        times[name] = min(r["min_ms"], times.get(name, math.inf))
    return layers


def fastest_variants(doc: dict) -> dict[str, tuple[ConvShape, str, float]]:
    """Per layer of an im2win-gpu run file: (shape, variant, best ms) of the fastest ablation
    variant whose output passed the FP32 check (`im2win` itself counts as the variant it is only
    where it ran DEFAULT)."""
    best = {}
    for layer, (shape, times) in _variant_times(doc).items():
        name = min(times, key=times.__getitem__)
        best[layer] = (shape, name, times[name])
    return best


def _choose_default(doc: dict) -> tuple[tuple[str, float, list[str]] | None, str | None]:
    """(architecture_default's answer, no_default_reason's) for an im2win-gpu run file."""
    config = doc.get("config", {})
    if config.get("interrupted_before") or config.get("stopped_by"):
        return None, (
            "the run stopped before all of its layers, and a default from some would favour theirs"
        )
    layers = _variant_times(doc)
    if len(layers) < MIN_DEFAULT_LAYERS:
        return None, f"the run measured fewer than {MIN_DEFAULT_LAYERS} layers"
    everywhere = [n for n in VARIANTS if all(n in times for _, times in layers.values())]
    if not everywhere:
        return None, "no variant passed the check on all of its layers"

    def of_fastest(name: str) -> float:
        ratios = [min(times.values()) / times[name] for _, times in layers.values()]
        return math.exp(statistics.fmean(math.log(r) for r in ratios))

    name = max(everywhere, key=of_fastest)
    return (name, of_fastest(name), list(layers)), None


def architecture_default(doc: dict) -> tuple[str, float, list[str]] | None:
    """The variant of an im2win-gpu run file that is fastest over all of its layers, for the shapes
    no search has tuned: among the variants measured correct on every layer, the one with the
    greatest geometric mean of (the layer's fastest variant's time / its own time); the first in
    VARIANTS on a tie. Returns (variant, that mean, the layers), or None (no_default_reason)."""
    return _choose_default(doc)[0]


def no_default_reason(doc: dict) -> str | None:
    """Why an im2win-gpu run file gives no architecture default (architecture_default), or None:
    it stopped before some of its layers (a time limit, Ctrl-C, a lost GPU: a default from the
    first layers alone would favour their filters), it measured fewer than MIN_DEFAULT_LAYERS
    layers, or no variant passed the FP32 check on all of them."""
    return _choose_default(doc)[1]


def store_fastest(
    doc: dict, folder: Path | None, run_name: str
) -> tuple[dict[str, tuple[ConvShape, str, float]], tuple[str, float, list[str]] | None]:
    """Store, for the run's GPU architecture in `folder` (None: this machine's; SHIPPED: the
    package's), each layer's fastest variant of the run `run_name` (fastest_variants), except where
    `folder` already holds a configuration measured faster (an autotuner's), and the run's
    architecture_default in place of any stored before. Returns what was stored: the layers'
    (shape, variant, ms), and the default's (variant, geometric mean of the fastest, layers) or
    None."""
    arch = doc["config"]["device_arch"]
    stored = {}
    for layer, (shape, name, ms) in fastest_variants(doc).items():
        kept = _entry(tuned_path(arch, folder), shape_key(shape))
        if kept and kept.get("time_ms", float("inf")) <= ms:
            continue
        source = f"fastest of the ablation in {run_name} ({name})"
        store(arch, shape, VARIANTS[name], ms, len(VARIANTS), folder, source)
        stored[layer] = (shape, name, ms)
    default = architecture_default(doc)
    if default:
        name, mean, layers = default
        entry = {
            "config": dataclasses.asdict(VARIANTS[name]),
            "of_fastest_geomean": mean,
            "layers": layers,
            "source": f"fastest over the layers of {run_name} ({name})",
        }
        _write(arch, ARCH_DEFAULT, entry, folder)
    return stored, default


def main(argv: list[str] | None = None) -> int:
    """python -m im2win.cuda.tuned RAW [--ship]."""
    parser = argparse.ArgumentParser(
        prog="python -m im2win.cuda.tuned",
        description="Make each layer's fastest correct variant in an im2win-gpu run file (its "
        "ablation, all measured side by side there) the tuned configuration for that GPU "
        "architecture, and the variant fastest over all of its layers the architecture's default "
        "for every other shape: for this machine, or with --ship for the package. Needs no GPU.",
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
        best, default = store_fastest(doc, SHIPPED if args.ship else None, args.raw.name)
    except (ValueError, KeyError) as exc:
        raise SystemExit(
            f"tuned: cannot use {args.raw} ({exc}): give an im2win-gpu run file"
        ) from None
    for layer, (_, name, ms) in best.items():
        print(f"{layer}: {name} ({ms:.3f} ms)")
    if not best:
        print("no layer's variant beat the configuration already stored")
    if default:
        name, mean, layers = default
        print(
            f"default for the shapes no search has tuned: {name} ({mean:.2f}x the speed of "
            f"each layer's fastest, geometric mean over {len(layers)} layers)"
        )
    else:
        print(f"no default stored: {no_default_reason(doc)}")
    arch = doc["config"]["device_arch"]
    print(f"stored in {tuned_path(arch, SHIPPED if args.ship else None)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
