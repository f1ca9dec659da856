"""im2win on an NVIDIA GPU: the TFLOPS, memory and ablation tables of the Euro-Par 2023 paper.

Peers, under the ids they have on the CPU: direct, im2col_gemm (unfold + cuBLAS), torch (F.conv2d:
PyTorch's cuDNN choice with benchmark mode on), and the
paper's ablation: each optimization of the im2win kernel switched off (im2win/cuda/config.py). FP32
throughout (TF32 off). `run` needs a GPU and refuses to write anything without one; `render` draws
from raw files on any machine.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

import im2win
from harness import environment, results, timing
from harness.device import resolve_device
from im2win.cuda import runtime
from im2win.cuda.config import VARIANTS
from im2win.reference import conv2d_reference, error_bound
from im2win.shapes import PAPER_LAYERS, ConvShape
from reproductions.tables import fmt, geomean, grid, table

EXPERIMENT = "im2win-gpu"
SCALES = {
    "quick": {"batch": 8, "warmup": 3, "repeat": 10},
    "paper": {"batch": 128, "warmup": 5, "repeat": 20},
}
GPU_CONV4_CHANNELS = 32  # conv4 has C = 32 in the authors' GPU layer list (seth-lu/Im2win, CUDA)
# The authors' logs (log/log_float_GPU_TFLOPS.txt), in their unit: MACs / time = half of 2*MACs/time.
PAPER_TFLOPS_MACS = {
    "conv1": (3.023, 4.459, 8.018),
    "conv2": (3.045, 5.581, 7.692),
    "conv3": (3.118, 4.629, 3.764),
    "conv4": (6.854, 9.979, 13.025),
    "conv5": (3.788, 19.269, 14.503),
    "conv6": (3.827, 10.124, 9.979),
    "conv7": (0.745, 1.653, 1.299),
    "conv8": (6.247, 9.467, 12.025),
    "conv9": (2.048, 6.417, 7.297),
    "conv10": (3.334, 11.599, 11.976),
    "conv11": (1.685, 15.571, 12.386),
    "conv12": (0.907, 7.089, 7.641),
}
"""(im2col+cuBLAS, cuDNN, im2win) per layer, as logged by the authors (MACs / s, in T)."""


class NoGpu(RuntimeError):
    """The experiment needs a CUDA GPU and none is visible."""


def gpu_shapes(batch: int) -> dict[str, ConvShape]:
    out = {}
    for name, shape in PAPER_LAYERS.items():
        shape = shape.with_batch(batch)
        if name == "conv4":
            shape = dataclasses.replace(shape, c=GPU_CONV4_CHANNELS)
        out[name] = shape
    return out


def analytic_bytes(impl: str, shape: ConvShape) -> int | None:
    """Output plus workspace from the implementation's formula (None: cuDNN's has none); the
    ablation's im2win variants allocate what im2win does."""
    entry = im2win.IMPLEMENTATIONS["im2win" if impl.startswith("im2win") else impl]
    extra = entry.extra_bytes(shape, threads=1, cuda=True)
    return None if extra is None else shape.n * shape.k * shape.p * shape.q * 4 + extra


def _impls(x, w, b, shape) -> dict:
    def variant(config):
        return functools.partial(runtime.conv2d, x, w, b, shape.stride, shape.padding, config)

    calls = {
        impl: functools.partial(im2win.conv2d, x, w, b, shape.stride, shape.padding, impl=impl)
        for impl, entry in im2win.IMPLEMENTATIONS.items()
        if entry.cuda_run is not None
    }
    calls.update(
        {f"im2win_{name}": variant(cfg) for name, cfg in VARIANTS.items() if name != "im2win"}
    )
    return calls


# the `repro run` options this experiment takes besides --scale, --results-dir and --no-progress
OPTIONS = ("layers", "seed", "device")


def run(
    scale: str = "quick",
    layers=None,
    results_dir: Path | None = None,
    progress: bool = True,
    seed: int = 0,
    device: str | None = None,
) -> Path:
    """Measure every (layer, implementation) on CUDA device `device`; write one run file."""
    if not torch.cuda.is_available():
        raise NoGpu(
            "im2win-gpu needs an NVIDIA GPU visible to PyTorch (torch.cuda.is_available() "
            "is False here); nothing was measured or written. Render raw files measured "
            "elsewhere with `repro render im2win-gpu --raw FILE`."
        )
    device = resolve_device(device or "cuda")
    cfg = SCALES[scale]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    shapes = gpu_shapes(cfg["batch"])
    if layers:
        shapes = {n: shapes[n] for n in layers}
    started = time.perf_counter()
    records = []
    gen = torch.Generator().manual_seed(seed)
    for name, shape in tqdm(shapes.items(), desc=EXPERIMENT, disable=not progress):
        x = torch.randn(shape.input_shape(), generator=gen)
        w = torch.randn(shape.weight_shape(), generator=gen) / math.sqrt(
            shape.c * shape.r * shape.s
        )
        b = torch.randn(shape.k, generator=gen)
        exact = conv2d_reference(x[:1], w, b, shape.stride, shape.padding)
        bound = error_bound(x[:1], w, b, shape.stride, shape.padding)
        xc, wc, bc = x.cuda(), w.cuda(), b.cuda()
        for impl, call in _impls(xc, wc, bc, shape).items():
            out = call()
            torch.cuda.synchronize()
            violation = float(((out[:1].double().cpu() - exact).abs() / bound).max())
            del out
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            call()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            t = timing.measure_cuda(call, cfg["warmup"], cfg["repeat"])
            records.append(
                {
                    "layer": name,
                    "impl": impl,
                    **shape.as_dict(),
                    "flops": shape.flops,
                    **t.as_dict(),
                    "tflops": shape.flops / (t.min_ms * 1e-3) / 1e12,
                    "peak_mem_bytes": peak,
                    "analytic_mem_bytes": analytic_bytes(impl, shape),
                    "max_error_ratio": violation,
                    "correct": violation <= 1.0,
                }
            )
        del xc, wc, bc
    config = {
        "scale": scale,
        **cfg,
        "seed": seed,
        "layers": list(shapes),
        "default_tile": VARIANTS["im2win"].defines(),
        "variants": {n: c.defines() for n, c in VARIANTS.items()},
        "tf32": False,
        "device_arch": runtime.device_arch(torch.cuda.current_device()),
    }
    return results.write_run(
        EXPERIMENT,
        config=config,
        environment=environment.capture(),
        records=records,
        results_dir=results_dir,
        timing_method=timing.CUDA_METHOD.format(
            warmup=cfg["warmup"], repeat=cfg["repeat"], flush_mib=256
        ),
        extra={
            "wall_s": time.perf_counter() - started,
            "memory_method": "torch.cuda.max_memory_allocated() during one call minus the "
            "memory allocated before it (inputs): output + workspace "
            "(cuDNN's workspace comes from PyTorch's allocator too)",
        },
    )


LEGACY_IDS = {"im2col_cublas": "im2col_gemm", "cudnn": "torch"}  # raw files before 2026-12


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in doc["records"]:
        r["impl"] = LEGACY_IDS.get(r["impl"], r["impl"])
    layers, impls, tf = grid(doc, "tflops")
    _, _, mem = grid(doc, "peak_mem_bytes")
    _, _, formula = grid(doc, "analytic_mem_bytes")
    main = [i for i in impls if not i.startswith("im2win_")]
    ablation = [i for i in impls if i == "im2win" or i.startswith("im2win_")]
    gpu = (doc["environment"].get("gpu") or {}).get("name", "unknown GPU")
    mib = lambda v: fmt(None if v is None else v / 2**20, ".1f")  # noqa: E731
    parts = [
        f"# im2win on {gpu} ({doc['config']['scale']} scale, batch {doc['config']['batch']})\n",
        f"From `{source.name}` ({doc['created_utc']}, `{doc['command']}`). {doc['timing_method']}.\n",
        "## TFLOPS (2 x MACs / best time)\n",
        table(
            ["layer", *main],
            [[l] + [fmt(tf[(l, i)], ".2f") for i in main] for l in layers]
            + [["**geomean**"] + [fmt(geomean(tf[(l, i)] for l in layers), ".2f") for i in main]],
        ),
        "## Peak memory per call (MiB: output + workspace), measured (formula)\n",
        table(
            ["layer", *main],
            [[l] + [f"{mib(mem[(l, i)])} ({mib(formula[(l, i)])})" for i in main] for l in layers],
        ),
        "## Ablation (TFLOPS)\n",
        table(
            ["layer", *ablation], [[l] + [fmt(tf[(l, i)], ".2f") for i in ablation] for l in layers]
        ),
        "## Paper versus ours\n",
        "The authors' logs count MACs / time; converted here to 2 x MACs / time (x2). Their GPU is "
        "not named, and their batch is 128: compare only a paper-scale run.\n",
        table(
            [
                "layer",
                "paper cuBLAS",
                "ours im2col_gemm",
                "paper cuDNN",
                "ours torch (cuDNN)",
                "paper im2win",
                "ours im2win",
            ],
            [
                [l]
                + [
                    x
                    for pair in zip(
                        (fmt(2 * p, ".2f") for p in PAPER_TFLOPS_MACS[l]),
                        (fmt(tf.get((l, i)), ".2f") for i in ("im2col_gemm", "torch", "im2win")),
                        strict=True,
                    )
                    for x in pair
                ]
                for l in layers
                if l in PAPER_TFLOPS_MACS
            ],
        ),
        f"\nAll outputs checked against float64 conv2d on the first image: "
        f"{all(r['correct'] for r in doc['records'])}.\n",
    ]
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(parts))
    return [path]
