"""`repro`: regenerate the papers' tables and figures.

repro list                                   experiments and their scales
repro run im2win-cpu [--scale quick|paper]   CPU GFLOP/s, memory, paper comparison (minutes)
repro run im2win-nvrtc                       the GPU kernels' compiler resource report (no GPU)
repro run im2win-gpu --device cuda [--scale quick|paper]
                                             GPU TFLOPS, memory, ablation (needs a GPU)
repro run supersam-speed                     SuperSAM subnet encoder times, sandwich step cost
repro run supersam-subnets [--scale quick]   SuperSAM's table end to end: pretrain, supernet,
                                             OpenTuner search, test mIoU (quick: ~10 min on CPU)
repro run supersam-subnets --scale full --checkpoint sam_vit_b_01ec64.pth --data DIR
                                             the same with ViT-B on your data (DIR/train, val, test)
repro render EXPERIMENT [--raw FILE]         redraw tables and figures from a raw file (default:
                                             the newest), without measuring
repro render all                             redraw every experiment that has raw results
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import results
from reproductions import (
    im2win_cpu,
    im2win_gpu,
    im2win_nvrtc,
    supersam_speed,
    supersam_subnets,
)

EXPERIMENTS = {
    m.EXPERIMENT: m
    for m in (im2win_cpu, im2win_nvrtc, im2win_gpu, supersam_speed, supersam_subnets)
}


def _render(module, raw: Path | None, results_dir: Path) -> list[Path]:
    if raw is None:
        files = results.run_files(module.EXPERIMENT, results_dir)
        if not files:
            raise SystemExit(
                f"repro: no raw results for {module.EXPERIMENT} in "
                f"{results_dir / 'raw' / module.EXPERIMENT}; run "
                f"`repro run {module.EXPERIMENT}` first"
            )
        raw = files[-1]
    try:
        doc = results.load_run(raw)
    except ValueError as exc:
        raise SystemExit(f"repro: {exc}") from exc
    if doc["experiment"] != module.EXPERIMENT:
        raise SystemExit(
            f"repro: {raw} holds experiment {doc['experiment']!r}, not {module.EXPERIMENT!r}"
        )
    return module.render(doc, raw, results_dir / module.EXPERIMENT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="repro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list experiments and scales")

    run = sub.add_parser("run", help="measure an experiment, write its raw results, render them")
    run.add_argument("experiment", choices=sorted(EXPERIMENTS))
    run.add_argument(
        "--scale",
        default=None,
        help="im2win-cpu: quick (default: minutes on 2 cores), paper (batch 128: the papers' "
        "setting, hours on small machines), smoke (seconds, for tests); im2win-nvrtc: all "
        "(default)",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for every implementation (default: all available cores)",
    )
    run.add_argument("--repeat", type=int, default=None, help="timed calls per measurement")
    run.add_argument("--warmup", type=int, default=None, help="discarded calls before timing")
    run.add_argument("--layers", nargs="+", default=None, help="subset of layers (default: all)")
    run.add_argument(
        "--impls", nargs="+", default=None, help="subset of implementations (default: all)"
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    run.add_argument(
        "--device",
        default=None,
        help="im2win-gpu: the CUDA device to measure (default: cuda, the current one); "
        "supersam-subnets: cpu, cuda[:N] or auto (default: the GPU if PyTorch sees one)",
    )
    run.add_argument(
        "--checkpoint", default=None, help="supersam-subnets --scale full: SAM ViT-B weights"
    )
    run.add_argument(
        "--data",
        default=None,
        help="supersam-subnets: a folder with train/ val/ test/ dataset folders (default at "
        "quick scale: the nuclei image's splits)",
    )
    run.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="supersam-subnets: where models and search histories go (default: "
        "./runs/supersam-subnets/SCALE); a rerun reuses finished stages and resumes the rest",
    )
    run.add_argument("--fresh", action="store_true", help="supersam-subnets: start over")
    run.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="where raw/ and rendered outputs go (default: ./results)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    render = sub.add_parser("render", help="redraw tables and figures from a raw run file")
    render.add_argument(
        "experiment",
        choices=[*sorted(EXPERIMENTS), "all"],
        help="an experiment, or all: every experiment that has raw results (e.g. GPU runs "
        "copied from a GPU machine), skipping the others",
    )
    render.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="raw run file (default: the newest for the experiment)",
    )
    render.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="where raw/ is read and outputs go (default: ./results)",
    )

    args = parser.parse_args(argv)
    if args.command == "list":
        for name, module in EXPERIMENTS.items():
            print(f"{name}: scales {', '.join(module.SCALES)}")
        return 0
    args.results_dir = args.results_dir or results.default_results_dir()
    if args.command == "render" and args.experiment == "all":
        for name, module in EXPERIMENTS.items():
            if not results.run_files(name, args.results_dir):
                print(f"{name}: no raw results in {args.results_dir / 'raw' / name}, skipped")
                continue
            for path in _render(module, None, args.results_dir):
                print(f"wrote {path}")
        return 0
    module = EXPERIMENTS[args.experiment]
    if args.command == "run":
        args.scale = args.scale or next(iter(module.SCALES))
        if args.scale not in module.SCALES:
            parser.error(
                f"unknown scale {args.scale!r} for {args.experiment}; choose one of "
                f"{', '.join(module.SCALES)}"
            )
        try:
            raw = module.run(
                scale=args.scale,
                threads=args.threads,
                layers=args.layers,
                impls=args.impls,
                repeat=args.repeat,
                warmup=args.warmup,
                seed=args.seed,
                device=args.device,
                checkpoint=args.checkpoint,
                data=args.data,
                work_dir=args.work_dir,
                fresh=args.fresh,
                results_dir=args.results_dir,
                progress=not args.no_progress,
            )
        except im2win_gpu.NoGpu as exc:
            raise SystemExit(f"repro: {exc}") from exc
        except ValueError as exc:
            parser.error(str(exc))
        print(f"raw results: {raw}")
        paths = _render(module, raw, args.results_dir)
    else:
        paths = _render(module, args.raw, args.results_dir)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
