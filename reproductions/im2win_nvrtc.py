"""The GPU kernels' compiler report: registers, shared memory, spills and theoretical occupancy of
every ablation variant and autotuning candidate on sm_80, sm_86, sm_89 and sm_90.

Needs NVRTC (cuda-python), not a GPU: this table is reproducible on any machine.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from harness import environment, results
from im2win.cuda import access, sass
from im2win.cuda import compile as nvrtc
from im2win.cuda.access_window import window_model, window_summary
from im2win.cuda.config import AUTOTUNE_CANDIDATES, DEFAULT, VARIANTS, TileConfig
from im2win.cuda.launch import for_shape, window_tile
from im2win.cuda.occupancy import theoretical_occupancy
from im2win.shapes import PAPER_GPU_LAYERS, PAPER_LAYERS
from reproductions.tables import fmt

EXPERIMENT = "im2win-nvrtc"
SCALES = {"all": {}}
BAND_LAYERS = ("conv1", "conv3", "conv5")  # the other filter geometries of the band kernel
FIT_LAYER = "conv9"  # K = 64, as conv3, conv4 and conv7: where a fitted tile differs
CONFIGS = {
    # the fitted variants as made for FIT_LAYER (on conv10's K = 128 each is the tile it fits)
    **{n: for_shape(c, PAPER_LAYERS[FIT_LAYER]) if c.fit_k else c for n, c in VARIANTS.items()},
    "im2win_split_k": DEFAULT.kernel(slices=2),  # the default compiled for split-K launches
    # the band variant as launch.for_shape makes it for conv1-2 (S = 11, stride 4), conv3-4
    # (7, 2) and conv5 (5, 1); "band" itself is conv6-conv12's (3, 1)
    **{f"band_{n}": for_shape(VARIANTS["band"], PAPER_LAYERS[n]) for n in BAND_LAYERS},
    **{f"candidate{i}": c for i, c in enumerate(AUTOTUNE_CANDIDATES)},
}


# the `repro run` options this experiment takes besides --scale, --results-dir and --no-progress
OPTIONS = ()


MIX_ARCHS = ("sm_80", "sm_90")  # the main loop's instruction mix, from cuobjdump -sass
DEMAND_ARCHS = ("sm_90", "sm_80")  # 128 and 64 FP32 lanes an SM: the shared pipe's demand
MODEL_LAYER = "conv10"  # the access model's shape (batch 128), the layer Nsight profiled
MODEL_LAYERS = {  # configurations made for another layer
    **{f"band_{n}": n for n in BAND_LAYERS},
    **{n: FIT_LAYER for n, c in VARIANTS.items() if c.fit_k},
}
LEGACY = "1cf3772_default"  # the kernel Nsight Compute profiled, as the access model rebuilds it
LEGACY_TILE = TileConfig(bm=64, bn=128, tm=4, tn=8, min_blocks=4, wide_index=False)


def _mix(compiled) -> dict:
    try:
        return sass.loop_mix(compiled.cubin)
    except sass.DisassemblerUnavailable as exc:
        return {"skipped": str(exc)}


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
        if arch in MIX_ARCHS:
            records.append({"kind": "loop_mix", "config": name, "arch": arch, **_mix(compiled)})
    modelled = [(n, c, False) for n, c in CONFIGS.items() if c.smem]  # the model: the smem path
    for name, config, legacy in modelled + [(LEGACY, LEGACY_TILE, True)]:
        layer = MODEL_LAYERS.get(name, MODEL_LAYER)
        shape = PAPER_LAYERS[layer].with_batch(128)
        sites = access.model(config, shape, legacy=legacy)
        demand = {
            a: access.shared_pipe_demand(config, shape, a, legacy, sites) for a in DEMAND_ARCHS
        }
        records.append(
            {
                "kind": "access",
                "config": name,
                "layer": layer,
                **access.summary(sites),
                "shared_pipe_demand": demand,
            }
        )
        records += [
            {
                "kind": "access_site",
                "config": name,
                "site": s.name,
                "requests": s.requests,
                "wavefronts": s.wavefronts,
                "ideal": s.ideal,
                "sectors": s.sectors,
                "bytes_used": s.bytes_used,
            }
            for s in sites
        ]
    records += _window_records()
    records += _fused_records()
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


WINDOW_LEGACY = "c72bc28"  # the window transform before one block took an output row's tile


def _window_records() -> list[dict]:
    """The window transform's access model (im2win/cuda/access_window.py) on the GPU paper's
    layers at batch 128, input NCHW and channels_last, as now and as up to WINDOW_LEGACY."""
    out = []
    for layer, shape in PAPER_GPU_LAYERS.items():
        for channels_last in (False, True):
            tile = window_tile(shape, channels_last and shape.c > 1)
            for legacy in (True, False):
                out.append(
                    {
                        "kind": "window_access",
                        "layer": layer,
                        "input": "channels_last" if channels_last else "NCHW",
                        "kernel": WINDOW_LEGACY if legacy else "now",
                        "tile": None if legacy else [tile.tr, tile.tc, tile.tw],
                        **window_summary(window_model(shape, channels_last, legacy)),
                    }
                )
    return out


FUSED_PAIR = ("sgemm_tile_fit_k", "sgemm_tile_fit_k_fused")  # a kernel over Iw, and fused


def _fused_records() -> list[dict]:
    """The A-tile loads of a step of FUSED_PAIR by the access model, on the GPU paper's layers at
    batch 128, input NCHW and channels_last: from the window tensor, and from x itself."""
    out = []
    for layer, shape in PAPER_GPU_LAYERS.items():
        for channels_last in (False, True):
            for name in FUSED_PAIR:
                sites = access.model(VARIANTS[name], shape, channels_last=channels_last)
                load = next(s for s in sites if s.space == "global" and s.name.startswith("A "))
                out.append(
                    {
                        "kind": "fused_access",
                        "layer": layer,
                        "input": "channels_last" if channels_last else "NCHW",
                        "config": name,
                        "width": load.width,
                        "requests": load.requests,
                        "sectors": load.sectors,
                        "bytes_used": load.bytes_used,
                    }
                )
    return out


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in doc["records"] if r.get("kernel") == "im2win_conv"]
    lines = [
        "# GPU im2win kernels: compiler resource report\n",
        f"From `{source.name}` ({doc['created_utc']}, `{doc['command']}`), NVRTC "
        f"{doc['config']['nvrtc']}, options `{' '.join(doc['config']['options'])}` plus each "
        "configuration's -D switches. No GPU is needed to produce it.\n",
        "im2win_conv per configuration and architecture (the window and filter transform kernels "
        "are listed in the raw file). For the band kernels BK counts values of r*C + c a step, "
        "each with every filter column (S of them). Stack B: the stack frame a thread keeps in "
        "local memory beside its spills, for an array indexed at run time (accumulators in a "
        "loop left rolled).\n",
        "| config | arch | tile BMxBN/BK, micro | threads | registers | smem B | spill st/ld B "
        "| stack B | blocks/SM | occupancy (limit) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['arch']} | {r['BM']}x{r['BN']}/{r['BK']}, {r['TM']}x{r['TN']} | "
            f"{r['threads']} | {r['registers']} | {r['shared_bytes']} | {r['spill_stores']}/"
            f"{r['spill_loads']} | {r.get('stack_bytes', 'n/a')} | {r['blocks_per_sm']} | "
            f"{r['occupancy']:.0%} "
            f"({r['occupancy_limited_by']}) |"
        )
    lines += _mix_table(doc) + _access_table(doc) + _window_table(doc) + _fused_table(doc)
    lines += _goals(doc, rows)
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(lines) + "\n")
    return [path]


def _widths(counts: dict) -> str:
    return " + ".join(f"{n}x{w}b" for w, n in sorted(counts.items(), key=lambda x: int(x[0])))


def _mix_table(doc: dict) -> list[str]:
    mixes = [r for r in doc["records"] if r.get("kind") == "loop_mix"]
    if not mixes:
        return []
    out = [
        "\n## Main loop instruction mix\n",
        "im2win_conv's smallest loop with the most FFMAs, disassembled from the NVRTC CUBIN "
        "(cuobjdump -sass; im2win/cuda/sass.py). Widths in bits per thread: an LDS.128 loads four "
        "floats. LDGSTS = cp.async copies global -> shared (async_copy variants). Local = LDL/STL "
        "inside the loop (spills). Static counts: a fused kernel's loop holds both of its ways of "
        "loading x (float4 runs, and each value apart for C % 4 != 0) and the carry of its place "
        "in the reduction, of which a step runs one way.\n",
        "| config | arch | instructions | FFMA | shared loads | FFMA per shared load | LDS | "
        "STS | LDG | LDGSTS | local | barriers |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in mixes:
        if "skipped" in r:
            out.append(f"| {r['config']} | {r['arch']} | skipped: {r['skipped']} ||||||||||")
            continue
        w = r["widths"]
        out.append(
            f"| {r['config']} | {r['arch']} | {r['instructions']} | {r['ffma']} | "
            f"{r['shared_loads']} | {fmt(r['ffma_per_shared_load'], '.1f')} | "
            f"{_widths(w.get('LDS', {}))} | {_widths(w.get('STS', {}))} | "
            f"{_widths(w.get('LDG', {}))} | {_widths(w.get('LDGSTS', {}))} | "
            f"{r['local_accesses']} | {r['barriers']} |"
        )
    return out


def _access_table(doc: dict) -> list[str]:
    rows = [r for r in doc["records"] if r.get("kind") == "access"]
    if not rows:
        return []
    legacy = next((r for r in rows if r["config"] == LEGACY), {})
    legacy_demand = fmt(legacy.get("shared_pipe_demand", {}).get("sm_90"), ".1f")
    out = [
        f"\n## Memory access model ({MODEL_LAYER}, batch 128, unless the config names a layer)\n",
        "From the kernel's index math for block (0, 0) and its first step (im2win/cuda/access.py), "
        "not measured: shared-memory wavefronts per warp request (an LDS.128 needs 4 at best, a "
        "32-bit access 1) and the share of them caused by bank conflicts; useful bytes per "
        f"32-byte global sector. `{LEGACY}` is the kernel as it was when Nsight Compute profiled it "
        "on an H100, rebuilt in the model. Shared clocks per FFMA clock: the step's shared "
        "wavefronts (one a clock) over the clocks its FFMAs take at the FMA peak (4 warp FFMAs a "
        "clock an SM on sm_90, 2 on sm_80); above 1 the shared pipe bounds the kernel, at 1 / that "
        f"of the FMA peak at best (`{LEGACY}`: {legacy_demand} on sm_90, against Nsight's 98% "
        "busy L1 pipe and 31% "
        "busy FMA pipe).\n",
        "| config | layer | shared load wavefronts / request | conflict share | shared store "
        "wavefronts / request | conflict share | global load B / sector | global store B / sector "
        "| shared clocks per FFMA clock, sm_90 | sm_80 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        demand = r.get("shared_pipe_demand", {})
        out.append(
            f"| {r['config']} | {r['layer']} | {r['shared_load_wavefronts_per_request']:.2f} | "
            f"{r['shared_load_excess']:.0%} | {r['shared_store_wavefronts_per_request']:.2f} | "
            f"{r['shared_store_excess']:.0%} | {r['global_load_bytes_per_sector']:.1f} | "
            f"{r['global_store_bytes_per_sector']:.1f} | "
            + " | ".join(fmt(demand.get(a), ".2f") for a in DEMAND_ARCHS)
            + " |"
        )
    return out


def _window_table(doc: dict) -> list[str]:
    rows = [r for r in doc["records"] if r.get("kind") == "window_access"]
    if not rows:
        return []
    out = [
        "\n## Window transform access model (GPU paper layers, batch 128)\n",
        "im2win_window from its index math for one block in the middle of image 0 "
        "(im2win/cuda/access_window.py), not measured: useful bytes per 32-byte sector of the "
        "loads from x and the stores to the window tensor Iw, wavefronts per ideal wavefront of "
        "the tile's shared stores and loads (1.00: conflict-free), and the share of the store "
        f"lanes that move a value. `{WINDOW_LEGACY}`: the kernel up to that commit (a block a "
        "window row, TC <= 32 channels x 1024 / TC columns), the one whose bandwidth results/im2win-gpu "
        "records up to the H200 run at cc02389; now: a block an output row's TR x TC x TW tile.\n",
        "| layer | input | kernel | tile TR x TC x TW | x load B / sector | Iw store B / sector "
        "| tile store ways | tile load ways | store lanes busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tile = " x ".join(map(str, r["tile"])) if r["tile"] else "1 x <= 32 x 1024 / TC"
        out.append(
            f"| {r['layer']} | {r['input']} | {r['kernel']} | {tile} | "
            f"{r['x_load_bytes_per_sector']:.1f} | {r['iw_store_bytes_per_sector']:.1f} | "
            f"{r['tile_store_ways']:.2f} | {r['tile_load_ways']:.2f} | "
            f"{r['store_lane_use']:.0%} |"
        )
    return out


def _fused_table(doc: dict) -> list[str]:
    rows = [r for r in doc["records"] if r.get("kind") == "fused_access"]
    if not rows:
        return []
    unfused, fused = FUSED_PAIR
    by = {(r["layer"], r["input"], r["config"]): r for r in rows}
    out = [
        "\n## The A tile's loads, from the window tensor and fused (GPU paper layers, batch 128)\n",
        f"One step of block (0, 0) by the access model (im2win/cuda/access.py), not measured: "
        f"`{unfused}` loads its A tile from the window tensor Iw, `{fused}` (the window transform "
        "fused into the convolution) from x itself. Bytes a lane loads, 32-byte sectors the "
        "step's requests touch and the useful bytes of each. The fused kernel has no transform "
        "kernel before it and no window tensor.\n",
        "| layer | input | Iw: B a lane | sectors | B / sector | fused: B a lane | sectors | "
        "B / sector | fused / Iw sectors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["layer"], r["input"]) for r in rows)
    for layer, layout in keys:
        a, b = by.get((layer, layout, unfused)), by.get((layer, layout, fused))
        if not (a and b):
            continue
        cells = [
            f"{r['width']} | {r['sectors']} | {r['bytes_used'] / r['sectors']:.1f}" for r in (a, b)
        ]
        out.append(
            f"| {layer} | {layout} | {cells[0]} | {cells[1]} | {b['sectors'] / a['sectors']:.2f} |"
        )
    return out


def _goals(doc: dict, rows: list[dict]) -> list[str]:
    """The issue's compile-time goals for the default configuration (config "im2win")."""
    spills = [r["spill_stores"] + r["spill_loads"] for r in rows if r["config"] == "im2win"]
    mix = [r for r in doc["records"] if r.get("kind") == "loop_mix" and r["config"] == "im2win"]
    model = [r for r in doc["records"] if r.get("kind") == "access" and r["config"] == "im2win"]
    out = ["\n## Goals (default configuration)\n"]
    if spills:
        out.append(
            f"- No spills on any architecture: {max(spills)} B at most -> "
            f"{'met' if max(spills) == 0 else 'NOT met'}."
        )
    if model:
        m = model[0]
        free = m["shared_load_excess"] == 0 and m["shared_store_excess"] == 0
        out.append(
            "- Conflict-free shared memory access (by the model): load conflict share "
            f"{m['shared_load_excess']:.0%}, store {m['shared_store_excess']:.0%} -> "
            f"{'met' if free else 'NOT met'}."
        )
        for arch, demand in m.get("shared_pipe_demand", {}).items():
            out.append(
                f"- Shared clocks per FFMA clock on {arch} (by the model): {demand:.2f}, so the "
                f"shared pipe leaves at most {min(1.0, 1 / demand):.0%} of the FMA peak."
            )
    for r in mix:
        if "skipped" not in r:
            out.append(
                f"- FFMA per shared-load instruction in the main loop ({r['arch']}): "
                f"{r['ffma_per_shared_load']:.1f}; local memory accesses there: "
                f"{r['local_accesses']}."
            )
    return out + [""]
