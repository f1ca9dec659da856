"""im2win on an NVIDIA GPU: the TFLOPS, memory and ablation tables of the Euro-Par 2023 paper.

Peers, under the ids they have on the CPU: direct, im2col_gemm (unfold + cuBLAS), torch (F.conv2d:
PyTorch's cuDNN choice with benchmark mode on), and the
paper's ablation: each optimization of the im2win kernel switched off (im2win/cuda/config.py). FP32
throughout (TF32 off). `run` needs a GPU and refuses to write anything without one; `render` draws
from raw files on any machine.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

import im2win
from harness import environment, results, timing
from harness.device import first_line, gpu_lost, resolve_device
from im2win.cuda import cudnn_engines, runtime
from im2win.cuda.config import VARIANTS
from im2win.cuda.launch import split_slices
from im2win.metrics import window_transform_elems
from im2win.reference import conv2d_reference, error_bound
from im2win.shapes import PAPER_GPU_LAYERS, ConvShape
from reproductions.im2win_gpu_fused import CHANNELS_LAST
from reproductions.im2win_gpu_report import render

EXPERIMENT = "im2win-gpu"
SCALES = {
    "quick": {"batch": 8, "warmup": 3, "repeat": 10},
    "paper": {"batch": 128, "warmup": 5, "repeat": 20},
}


class NoGpu(RuntimeError):
    """The experiment needs a CUDA GPU and none is visible."""


class ContextLost(RuntimeError):
    """A failure that left the CUDA context unusable (a sticky error, such as an illegal address:
    every later call would fail too)."""


def _guarded(name: str, impl: str, measure) -> list[dict]:
    """`measure()`'s records; where it raises (a launch the GPU refuses, a cuDNN engine that errors
    when run, memory), one record saying how (`failed`), so that a failure costs the run that
    measurement, not the layers after it: on a GPU lent for minutes, one bad variant must not take
    every other number with it. A failure that leaves the CUDA context unusable raises ContextLost,
    and the run keeps the layers measured before it."""
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and the run goes on
        failure = first_line(exc)
        lost = gpu_lost()
        if lost:
            raise ContextLost(
                f"{impl} on {name} failed ({failure}); the GPU failed after it: {lost}"
            ) from exc
        return [{"layer": name, "impl": impl, "failed": failure}]


def gpu_shapes(batch: int) -> dict[str, ConvShape]:
    return {name: shape.with_batch(batch) for name, shape in PAPER_GPU_LAYERS.items()}


def _variant(impl: str):
    """The ablation variant (TileConfig) `impl` runs; None for im2win itself and the peers."""
    if impl in CHANNELS_LAST:
        return VARIANTS[CHANNELS_LAST[impl]]
    return VARIANTS.get(impl.removeprefix("im2win_")) if impl.startswith("im2win_") else None


def analytic_bytes(impl: str, shape: ConvShape) -> int | None:
    """Output plus workspace from the implementation's formula (None: cuDNN's has none); the
    ablation's im2win variants by their own tile's split-K."""
    if impl.startswith("im2win_"):
        config = _variant(impl)
        extra = runtime.workspace_elems(shape, torch.cuda.current_device(), config) * 4
    else:
        extra = im2win.IMPLEMENTATIONS[impl].extra_bytes(shape, threads=1, cuda=True)
    return None if extra is None else shape.n * shape.k * shape.p * shape.q * 4 + extra


def _kernel_record(impl: str, shape: ConvShape) -> dict:
    """For im2win and its ablation variants: the slices of the reduction (split-K) and the tile
    configuration made for this layer (a band variant's filter geometry and step depth are the
    layer's), and for im2win where its tile came from (runtime.tile_source: this machine's or
    the package's for the layer or for the architecture, else "default": DEFAULT); nothing for
    the peers."""
    if impl != "im2win" and not impl.startswith("im2win_"):
        return {"split_k": None}
    variant = _variant(impl)
    index = torch.cuda.current_device()
    config = runtime.resolve_config(shape, index, variant)
    out = {
        "split_k": split_slices(shape, config, runtime.sm_count(index)),
        "tile": config.defines(),
    }
    if impl == "im2win":
        out["tile_source"] = runtime.tile_source(shape, index)
    return out


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
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for impl, name in CHANNELS_LAST.items():
        calls[impl] = functools.partial(
            runtime.conv2d, x_cl, w, b, shape.stride, shape.padding, VARIANTS[name]
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
    done, interrupted, stopped_by = [], False, None
    try:
        for name, shape in tqdm(shapes.items(), desc=EXPERIMENT, disable=not progress):
            records += _layer(name, shape, gen, cfg)
            done.append(name)
    except (KeyboardInterrupt, ContextLost) as exc:  # Ctrl-C, a time limit's SIGINT, a lost GPU:
        interrupted = True  # keep the layers measured so far (an unfinished layer's are dropped)
        if not done:
            raise
        if isinstance(exc, ContextLost):
            stopped_by = str(exc)
    config = {
        "scale": scale,
        **cfg,
        "seed": seed,
        "layers": done,
        "default_tile": VARIANTS["im2win"].defines(),
        "variants": {n: c.defines() for n, c in VARIANTS.items()},
        "tf32": False,
        "device_arch": runtime.device_arch(torch.cuda.current_device()),
    }
    if interrupted:
        config["interrupted_before"] = [n for n in shapes if n not in done]
    if stopped_by:
        config["stopped_by"] = stopped_by
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


def _layer(name: str, shape: ConvShape, gen: torch.Generator, cfg: dict) -> list[dict]:
    """Every implementation, cuDNN engine and the SGEMM roofline on one layer."""
    records = []
    x = torch.randn(shape.input_shape(), generator=gen)
    w = torch.randn(shape.weight_shape(), generator=gen) / math.sqrt(shape.c * shape.r * shape.s)
    b = torch.randn(shape.k, generator=gen)

    def against(bias):  # _measure, checked against the float64 output of the first image
        exact = conv2d_reference(x[:1], w, bias, shape.stride, shape.padding)
        bound = error_bound(x[:1], w, bias, shape.stride, shape.padding)
        return functools.partial(
            _measure, name=name, shape=shape, exact=exact, bound=bound, cfg=cfg
        )

    xc, wc, bc = x.cuda(), w.cuda(), b.cuda()
    check = against(b)
    for impl, call in _impls(xc, wc, bc, shape).items():

        def measure(impl=impl, call=call):
            record = check(impl, call, analytic_bytes(impl, shape)) | _kernel_record(impl, shape)
            if impl == "im2win":
                record["phases_ms"] = _phases(xc, wc, bc, shape, cfg)
                record |= _window_alone(name, xc, shape, cfg)
            return [record]

        records += _guarded(name, impl, measure)
    # The engines run the frontend's plain convolution graph, without the bias: checked against
    # the float64 convolution without it (against the biased one every engine failed, by the bias).
    plain = against(None)
    records += _guarded(name, "cudnn_engines", lambda: _cudnn_engines(xc, wc, name, shape, plain))
    records += _guarded(name, "sgemm", lambda: [_sgemm(name, shape, cfg)])
    return records


def _window_alone(layer: str, x, shape: ConvShape, cfg: dict) -> dict:
    """The window transform on its own, each timed as the whole call is: im2win_window
    ("window_ms"), the kernel up to c72bc28 ("window_rows_ms") and the roofline, a device-to-device
    copy (torch's copy_) that reads and writes as many bytes ("window_copy_ms"). One that fails
    (memory) is recorded as "<name>_failed" with why (_guarded), and im2win's own record stands."""
    floats = -(-window_transform_elems(shape) // 2)

    def copy():
        src = torch.empty(floats, device="cuda")
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)

    out = {}
    for name, make in (
        ("window", lambda: lambda: runtime.window_transform(x, shape)),
        ("window_rows", lambda: lambda: runtime.window_transform(x, shape, rows=True)),
        ("window_copy", copy),
    ):

        def measure(make=make):
            return [{"ms": timing.measure_cuda(make(), cfg["warmup"], cfg["repeat"]).min_ms}]

        (got,) = _guarded(layer, f"im2win {name}", measure)
        out[f"{name}_{'failed' if 'failed' in got else 'ms'}"] = got.get("failed", got.get("ms"))
    return out


def _phases(x, w, b, shape: ConvShape, cfg: dict) -> dict[str, float]:
    """im2win's best ms per kernel: the window transform, the filter reorder, the convolution and
    split-K's reduction (where it runs), each between CUDA events of its own, timed as the whole
    call is (warm-up, L2 flushed before each call)."""

    def call(events: list) -> None:
        runtime.conv2d(x, w, b, shape.stride, shape.padding, events=events)

    return timing.measure_cuda_phases(call, cfg["warmup"], cfg["repeat"])


def _measure(impl, call, analytic, *, name, shape, exact, bound, cfg) -> dict:
    """Correctness on the first image (float64 oracle), peak memory, CUDA-event time of `call`."""
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
    return {
        "layer": name,
        "impl": impl,
        **shape.as_dict(),
        "flops": shape.flops,
        **t.as_dict(),
        "tflops": shape.flops / (t.min_ms * 1e-3) / 1e12,
        "peak_mem_bytes": peak,
        "analytic_mem_bytes": analytic,
        "max_error_ratio": violation,
        "correct": violation <= 1.0,
    }


def _cudnn_engines(x, w, name: str, shape: ConvShape, check) -> list[dict]:
    """Each cuDNN engine on its own (ids cudnn_<plan name>), with its workspace; one that does not
    apply to the layer is recorded with the reason."""
    try:
        found = cudnn_engines.engines(x, w, shape.stride, shape.padding)
    except cudnn_engines.CudnnFrontendUnavailable as exc:
        return [{"layer": name, "impl": "cudnn_engines", "skipped": str(exc)}]
    out = []
    for e in found:
        impl = f"cudnn_{e.name}"
        if e.run is None:
            out.append({"layer": name, "impl": impl, "skipped": e.reason})
            continue

        def measure(e=e, impl=impl):
            return [check(impl, e.run, None) | {"workspace_bytes": e.workspace_bytes}]

        out += _guarded(name, impl, measure)
    return out


def _sgemm(name: str, shape: ConvShape, cfg: dict) -> dict:
    """The roofline: one cuBLAS SGEMM of the layer's implicit-GEMM shape, M = N*P*Q pixels x
    N = K channels x depth C*R*S, 2 x M*N*depth FLOPs, the same as the convolution's."""
    m, depth = shape.n * shape.p * shape.q, shape.c * shape.r * shape.s
    a = torch.randn(m, depth, device="cuda")
    b = torch.randn(depth, shape.k, device="cuda")
    t = timing.measure_cuda(lambda: a @ b, cfg["warmup"], cfg["repeat"])
    return {
        "layer": name,
        "impl": "sgemm",
        "kind": "roofline",
        **t.as_dict(),
        "tflops": 2 * m * shape.k * depth / (t.min_ms * 1e-3) / 1e12,
    }


__all__ = ["EXPERIMENT", "OPTIONS", "SCALES", "ContextLost", "NoGpu", "render", "run"]
