"""`repro`: regenerate the papers' tables and figures.

repro list                                   experiments and their scales
repro run im2win-cpu [--scale quick|paper]   CPU GFLOP/s, memory, paper comparison (minutes)
repro run im2win-nvrtc                       the GPU kernels' compiler resource report (no GPU)
repro run im2win-network                     whole networks with im2win against PyTorch's forms
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
import textwrap
from pathlib import Path

from harness import results
from harness.args import at_least, thread_count
from harness.native import CompilerError
from im2win.cpu.levels import LEVELS
from im2win.implementations import IMPLEMENTATIONS
from im2win.shapes import PAPER_LAYERS
from reproductions import (
    im2win_cpu,
    im2win_gpu,
    im2win_network,
    im2win_nvrtc,
    supersam_speed,
    supersam_subnets,
)

EXPERIMENTS = {
    m.EXPERIMENT: m
    for m in (
        im2win_cpu,
        im2win_network,
        im2win_nvrtc,
        im2win_gpu,
        supersam_speed,
        supersam_subnets,
    )
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
    if not doc["records"]:
        raise SystemExit(
            f"repro: {raw} holds no records (an empty run); nothing rendered, the existing "
            "tables and figures are unchanged"
        )
    return module.render(doc, raw, results_dir / module.EXPERIMENT)


# every option an experiment may declare (its module's OPTIONS), by the keyword `run` takes
RUN_OPTIONS: dict[str, tuple[str, dict]] = {
    "threads": (
        "--threads",
        dict(
            type=thread_count,
            help="threads for every implementation, at most the available cores (default: all "
            "of them)",
        ),
    ),
    "layers": (
        "--layers",
        dict(nargs="+", choices=list(PAPER_LAYERS), help="subset of layers (default: all)"),
    ),
    "impls": (
        "--impls",
        dict(nargs="+", choices=list(IMPLEMENTATIONS), help="subset of implementations"),
    ),
    "repeat": ("--repeat", dict(type=at_least(1), help="timed calls per measurement")),
    "min_time": (
        "--min-time",
        dict(
            type=at_least(0, float),
            metavar="SECONDS",
            help="keep timing a fast implementation until its calls add up to this (default: "
            "the scale's; 0: exactly --repeat calls)",
        ),
    ),
    "warmup": ("--warmup", dict(type=at_least(0), help="discarded calls before timing")),
    "seed": ("--seed", dict(type=int, default=0, help="seed of the random inputs and choices")),
    "isa_level": (
        "--isa",
        dict(
            choices=["native", *LEVELS],
            default="native",
            help="the x86 level every implementation runs at (default: native, this CPU's "
            "widest SIMD). x86-64-v3 times the AVX2 code a CPU without AVX-512 runs, on one that "
            "has it: im2win's kernels and the FMA probe are built for the level, and PyTorch's "
            "oneDNN, ATen and MKL are held to it",
        ),
    ),
    "device": (
        "--device",
        dict(
            help="cpu, cuda, cuda:N or auto (default: im2win-gpu the current GPU, "
            "supersam-subnets the GPU if PyTorch sees one, else the CPU)"
        ),
    ),
    "precision": (
        "--precision",
        dict(
            choices=["fp32", "bf16"],
            default="fp32",
            help="bf16: forward passes under bf16 autocast (CUDA only)",
        ),
    ),
    "checkpoint": ("--checkpoint", dict(help="--scale full: the SAM ViT-B weights (a .pth file)")),
    "data": (
        "--data",
        dict(
            help="a folder with train/ val/ test/ dataset folders (default at quick scale: the "
            "nuclei image's splits)"
        ),
    ),
    "work_dir": (
        "--work-dir",
        dict(
            type=Path,
            help="where models and search histories go (default: ./runs/supersam-subnets/SCALE); "
            "a rerun reuses finished stages and resumes the rest",
        ),
    ),
    "fresh": ("--fresh", dict(action="store_true", help="start over: discard the work folder")),
}


def summary(module) -> str:
    """An experiment's module docstring's first paragraph, on one line: what it reproduces."""
    return " ".join(module.__doc__.split("\n\n")[0].split())


def _results_dir(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--results-dir", type=Path, default=None, help=help_text)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list experiments and scales")

    run = sub.add_parser("run", help="measure an experiment, write its raw results, render them")
    experiments = run.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, module in sorted(EXPERIMENTS.items()):
        p = experiments.add_parser(
            name,
            help=summary(module),
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--scale",
            choices=list(module.SCALES),
            default=next(iter(module.SCALES)),
            help="default: %(default)s",
        )
        for option in module.OPTIONS:
            flag, kwargs = RUN_OPTIONS[option]
            p.add_argument(flag, dest=option, **kwargs)
        _results_dir(p, "where raw/ and rendered outputs go (default: ./results)")
        p.add_argument(
            "--no-progress", dest="progress", action="store_false", help="no progress bar"
        )

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
    _results_dir(render, "where raw/ is read and outputs go (default: ./results)")
    return parser


def _out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation that failed: Python's MemoryError, or PyTorch's CPU or CUDA
    allocator refusing a tensor (a RuntimeError that says so)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or any(
        words in text for words in ("can't allocate memory", "out of memory")
    )


def _smaller(module) -> str:
    """What to give `repro run` for a smaller run of `module`: the flags it has for that."""
    flags = [RUN_OPTIONS[o][0] for o in ("impls", "layers") if o in module.OPTIONS]
    return ", ".join([*flags, "a smaller --scale"])


def _not_taken(experiment: str, extra: list[str]) -> str:
    """Why `repro run EXPERIMENT` refuses the arguments `extra`: the first option it does not take
    and the experiments that take it (or the stray argument), and the options it does take."""
    flag = next((a.split("=")[0] for a in extra if a.startswith("-")), None)
    takers = [
        n for n, m in EXPERIMENTS.items() if any(RUN_OPTIONS[o][0] == flag for o in m.OPTIONS)
    ]
    if flag is None:
        what = f"unexpected argument {extra[0]!r}"
    elif takers:
        named = takers[0] if len(takers) == 1 else f"{', '.join(takers[:-1])} and {takers[-1]}"
        what = f"{flag} is not one of its options but of {named}"
    else:
        what = f"{flag} is not one of its options"
    own = ["--scale", *(RUN_OPTIONS[o][0] for o in EXPERIMENTS[experiment].OPTIONS)]
    return (
        f"repro run {experiment}: {what}; it takes "
        f"{', '.join([*own, '--results-dir', '--no-progress'])} (see repro run {experiment} "
        "--help)\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "run":
        parser.exit(2, _not_taken(args.experiment, extra))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "list":
        for name, module in EXPERIMENTS.items():
            print(textwrap.fill(f"{name}: {summary(module)}", 100, subsequent_indent="    "))
            print(f"    scales: {', '.join(module.SCALES)}")
        return 0
    args.results_dir = args.results_dir or results.default_results_dir()
    try:
        results.check_writable(args.results_dir)
    except ValueError as exc:
        raise SystemExit(f"repro: {exc}; give --results-dir a folder you can write in") from None
    try:
        return _command(parser, args)
    # the disk filled up, no compiler, the CPU kernels' build failed: one line, not a traceback
    except (OSError, CompilerError) as exc:
        raise SystemExit(f"repro {args.command} {args.experiment}: {exc}") from exc


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`repro run` or `repro render`, the results folder checked."""
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
        options = {k: getattr(args, k) for k in (*module.OPTIONS, "scale", "progress")}
        try:
            raw = module.run(results_dir=args.results_dir, **options)
        except (im2win_gpu.NoGpu, im2win_gpu.ContextLost) as exc:
            raise SystemExit(f"repro: {exc}") from exc
        except ValueError as exc:
            parser.error(str(exc))
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SystemExit(
                f"repro: {args.experiment} ran out of memory ({first}); no raw file was written. "
                f"For a smaller run: {_smaller(module)}"
            ) from exc
        print(f"raw results: {raw}")
        paths = _render(module, raw, args.results_dir)
    else:
        paths = _render(module, args.raw, args.results_dir)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
