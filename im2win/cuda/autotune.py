"""OpenTuner search over the GPU kernel's compile-time tile parameters, per layer and architecture.

Searched: block tile (bm, bn), K-tile (bk), micro-tile (tm, tn, hence threads = bm/tm * bn/tn),
the registers cap (min_blocks), the reduction's slices (split_k), cp.async copies (async_copy),
the window-band kernel (band; its filter width and stride are the layer's, launch.for_shape) and
the window transform fused into the convolution (fused).
Configurations that cannot compile or launch are reported to OpenTuner as errors without being
measured. The known-good tiles of AUTOTUNE_CANDIDATES (the paper's 128x128/8x8 among them) are
proposed first, so a short search starts from them. The best configuration per (architecture,
layer shape) is kept by im2win/cuda/tuned.py and used by im2win.cuda.runtime.conv2d when present.
The tuning database (SQLite) is kept beside it, so a search can be resumed or extended.

The objective is pluggable: on a GPU it is the kernel's CUDA-event time (`cuda_objective`); the
tests drive the same search with the OpenCL emulation's time, which checks the plumbing only.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.args import at_least
from harness.native import cache_dir
from im2win.cuda.config import AUTOTUNE_CANDIDATES, DEFAULT, TileConfig
from im2win.cuda.launch import for_shape
from im2win.cuda.tuned import SHIPPED, shape_key, store, stored, tuned_path
from im2win.shapes import ConvShape

SPACE = {
    "bm": [32, 64, 128, 256, 512],  # 512 x 32 and 512 x 64: K = 32 or 64 without a zero column
    "bn": [32, 64, 128, 256],
    "bk": [4, 8, 16],  # a band kernel: values of r*C + c a step (launch.band_depth caps it)
    "tm": [2, 4, 8, 16],
    "tn": [2, 4, 8, 16],
    "min_blocks": [1, 2, 4],
    "split_k": [0, 1, 2, 4],  # 0: chosen from the GPU's SMs (im2win.cuda.launch.split_slices)
    "async_copy": [False, True],
    "stages": [2, 3],
    "band": [False, True],  # window bands staged once per 4 pixels (kernels/im2win_band.cu)
    "fused": [False, True],  # the window transform fused into the convolution (A read from x)
}


def cuda_objective(shape: ConvShape) -> Callable[[TileConfig], float]:
    """Best CUDA-event time (ms, L2 flushed before each call) of im2win with a configuration on the
    current GPU: what `repro run im2win-gpu` reports."""
    import torch

    from harness.timing import measure_cuda
    from im2win.cuda.runtime import conv2d

    x = torch.randn(shape.input_shape(), device="cuda")
    w = torch.randn(shape.weight_shape(), device="cuda")

    def objective(config: TileConfig) -> float:
        return measure_cuda(
            lambda: conv2d(x, w, None, shape.stride, shape.padding, config), warmup=2, repeat=10
        ).min_ms

    return objective


def tune(
    shape: ConvShape,
    arch: str,
    objective: Callable[[TileConfig], float],
    evaluations: int = 40,
    seed: int = 0,
    folder: Path | None = None,
    launchable: Callable[[TileConfig], list[str]] | None = None,
    seconds: float | None = None,
    ship: bool = False,
) -> tuple[TileConfig, float]:
    """Search the tile space for `shape` with OpenTuner; store and return the best (config, ms).

    `launchable(config)` lists why a configuration cannot run (default: the problems of the
    configuration made for `shape`, launch.for_shape); such configurations are never measured.
    `seconds`: stop proposing once this much time has passed and something was measured (the
    seeds, AUTOTUNE_CANDIDATES, come first); the tuning database keeps the search for a later run.
    `ship`: store the best in the package's configurations (tuned.SHIPPED) too.

    The configuration the shape runs with today (the one stored for it or for the architecture,
    else DEFAULT) is measured first, beside the search: where nothing the search proposes beats
    it, it is what stays stored, so a search never replaces a faster configuration (an ablation
    variant's, a longer search's) with a slower one.
    """
    from harness.tuner import OpenTunerLoop

    launchable = launchable or (lambda c: for_shape(c, shape).problems())
    db = (folder or cache_dir() / "tuned") / f"{arch}.opentuner.db"
    deadline = time.monotonic() + seconds if seconds is not None else math.inf
    measured = proposed = 0

    def attempt(config: TileConfig, label) -> float:
        """The objective's ms for `config`, or inf where it failed (told as an error); raises
        where the failure left the GPU unusable, as every later candidate would fail too."""
        nonlocal measured
        try:
            ms = objective(config)
        except Exception as exc:  # noqa: BLE001 - one failed candidate ends no search
            from harness.device import first_line, gpu_lost

            failure, lost = first_line(exc), gpu_lost()
            if lost:
                raise RuntimeError(f"{label} failed ({failure}); then {lost}") from exc
            print(f"autotune: {label} failed, told as an error: {failure}", file=sys.stderr)
            return math.inf
        measured += 1
        return ms

    found = stored(arch, shape, folder)
    best, source = (found[1], f"kept: {found[0]}") if found else (DEFAULT, "kept: default")
    if launchable(best):
        best, source = DEFAULT, "kept: default"
    best_ms = attempt(best, f"the configuration in use ({source.removeprefix('kept: ')})")
    seeds = [{k: getattr(c, k) for k in SPACE} for c in AUTOTUNE_CANDIDATES]
    with OpenTunerLoop(
        SPACE, db, "im2win", shape_key(shape), arch, seed=seed, seeds=seeds
    ) as tuner:

        def done() -> bool:
            return measured >= evaluations or (measured > 0 and time.monotonic() > deadline)

        while not done() and proposed < evaluations * 4:
            batch = tuner.ask()
            proposed += not batch  # a generation without proposals counts, so this ends
            for handle, values in batch:
                if done():  # the rest of the generation stays unmeasured
                    break
                proposed += 1
                config = TileConfig(**values, wide_index=DEFAULT.wide_index)
                if launchable(config):  # cannot run: reported as failed, never measured
                    tuner.tell(handle, math.inf)
                    continue
                ms = attempt(config, values)
                tuner.tell(handle, ms)
                if ms < best_ms:
                    best, best_ms, source = config, ms, "autotune"
    if math.isinf(best_ms):
        raise RuntimeError(f"no launchable configuration found in {evaluations} evaluations")
    store(arch, shape, best, best_ms, measured, folder, source)
    if ship:
        store(arch, shape, best, best_ms, measured, SHIPPED, source)
    return best, best_ms


def main(argv: list[str] | None = None) -> int:
    """python -m im2win.cuda.autotune: tune the papers' layers on this machine's GPU."""
    import torch

    from im2win.cuda.runtime import device_arch
    from im2win.shapes import PAPER_GPU_LAYERS

    parser = argparse.ArgumentParser(
        prog="python -m im2win.cuda.autotune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch", type=at_least(1), default=128, help="batch of the tuned shapes")
    parser.add_argument(
        "--evaluations", type=at_least(1), default=40, help="measured configurations"
    )
    parser.add_argument(
        "--layers", nargs="+", default=list(PAPER_GPU_LAYERS), choices=PAPER_GPU_LAYERS
    )
    parser.add_argument(
        "--time-budget-s",
        type=at_least(0, float),
        default=None,
        help="stop the whole search after about this many seconds, shared evenly by the layers "
        "still to tune (each measures at least one configuration; the known-good tiles come "
        "first). Default: no limit",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help="also write the best configurations into the package (im2win/cuda/tuned_configs/"
        "<arch>.json), which every install then uses by default: for a maintainer's GPU run",
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("autotune: needs an NVIDIA GPU visible to PyTorch; nothing was tuned")
    arch = device_arch(torch.cuda.current_device())
    started = time.monotonic()
    for i, layer in enumerate(args.layers):
        shape = PAPER_GPU_LAYERS[layer].with_batch(args.batch)
        seconds = None
        if args.time_budget_s is not None:
            left = args.time_budget_s - (time.monotonic() - started)
            seconds = max(0.0, left) / (len(args.layers) - i)
        try:
            best, ms = tune(
                shape,
                arch,
                cuda_objective(shape),
                args.evaluations,
                seconds=seconds,
                ship=args.ship,
            )
        except RuntimeError as exc:  # the layers before this one are stored already
            kept = ", ".join(args.layers[:i]) or "no layer"
            raise SystemExit(
                f"autotune: {layer}: {exc}; {kept} stored in {tuned_path(arch)}"
            ) from exc
        print(f"{layer}: {ms:.3f} ms with {best}")
    print(
        f"stored in {tuned_path(arch)}" + (f" and {tuned_path(arch, SHIPPED)}" if args.ship else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
