"""The GPU kernels' compiler report: registers, shared memory, spills and theoretical occupancy of
every ablation variant and autotuning candidate on sm_80, sm_86, sm_89 and sm_90.

Needs NVRTC (cuda-python), not a GPU: this table is reproducible on any machine.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from harness import environment, results
from im2win.cuda import compile as nvrtc
from im2win.cuda.config import AUTOTUNE_CANDIDATES, DEFAULT, VARIANTS
from im2win.cuda.occupancy import theoretical_occupancy

EXPERIMENT = "im2win-nvrtc"
SCALES = {"all": {}}
CONFIGS = {**VARIANTS, **{f"candidate{i}": c for i, c in enumerate(AUTOTUNE_CANDIDATES)}}


# the `repro run` options this experiment takes besides --scale, --results-dir and --no-progress
OPTIONS = ()


def run(scale: str = "all", results_dir: Path | None = None, progress: bool = True) -> Path:
    """Compile every configuration for every architecture and write one run file."""
    started = time.perf_counter()
    records = []
    jobs = [(name, arch) for name in CONFIGS for arch in nvrtc.ARCHS]
    for name, arch in tqdm(jobs, desc=EXPERIMENT, disable=not progress, unit="compile"):
        config = CONFIGS[name]
        compiled = nvrtc.compile_cubin(config, arch)
        for kernel, res in compiled.resources.items():
            threads = config.threads if kernel == "im2win_conv" else 256
            occ = theoretical_occupancy(res, threads)
            records.append(
                {
                    "config": name,
                    "arch": arch,
                    "kernel": kernel,
                    **config.defines(),
                    "threads": threads,
                    **res.as_dict(),
                    "blocks_per_sm": occ.blocks_per_sm,
                    "occupancy": occ.fraction,
                    "occupancy_limited_by": occ.limited_by,
                    "cubin_bytes": len(compiled.cubin),
                }
            )
    config = {
        "scale": scale,
        "configs": {n: c.defines() for n, c in CONFIGS.items()},
        "archs": list(nvrtc.ARCHS),
        "nvrtc": nvrtc.nvrtc_version(),
        "options": nvrtc.compile_options(DEFAULT, "<arch>"),
    }
    return results.write_run(
        EXPERIMENT,
        config=config,
        environment=environment.capture(),
        records=records,
        results_dir=results_dir,
        timing_method="none (compile-time report)",
        extra={
            "wall_s": time.perf_counter() - started,
            "occupancy_method": "im2win.cuda.occupancy.theoretical_occupancy (CUDA occupancy "
            "calculator formula, per-SM limits of the CUDA C++ Guide)",
        },
    )


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in doc["records"] if r["kernel"] == "im2win_conv"]
    lines = [
        "# GPU im2win kernels: compiler resource report\n",
        f"From `{source.name}` ({doc['created_utc']}, `{doc['command']}`), NVRTC "
        f"{doc['config']['nvrtc']}, options `{' '.join(doc['config']['options'])}` plus each "
        "configuration's -D switches. No GPU is needed to produce it.\n",
        "im2win_conv per configuration and architecture (the window and filter transform kernels "
        "are listed in the raw file):\n",
        "| config | arch | tile BMxBN/BK, micro | threads | registers | smem B | spill st/ld B "
        "| blocks/SM | occupancy (limit) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['arch']} | {r['BM']}x{r['BN']}/{r['BK']}, {r['TM']}x{r['TN']} | "
            f"{r['threads']} | {r['registers']} | {r['shared_bytes']} | {r['spill_stores']}/"
            f"{r['spill_loads']} | {r['blocks_per_sm']} | {r['occupancy']:.0%} "
            f"({r['occupancy_limited_by']}) |"
        )
    default = [r for r in rows if r["config"] == "im2win" and r["arch"] == "sm_90"]
    if default:
        d = default[0]
        spills = d["spill_stores"] + d["spill_loads"]
        lines.append(
            f"\nGoal (issue: on sm_90 the default configuration has no spills and >= 50% theoretical "
            f"occupancy): spills {spills} B, occupancy {d['occupancy']:.0%} -> "
            f"{'met' if spills == 0 and d['occupancy'] >= 0.5 else 'NOT met'}.\n"
        )
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(lines) + "\n")
    return [path]
