"""Run the GPU kernels' very source on the CPU under OpenCL (PoCL), to verify them without a GPU.

The same text NVRTC compiles (im2win/cuda/source.py) is built as OpenCL C for an OpenCL CPU device,
with the same -D configuration, launched with the same grid and block (im2win/cuda/launch.py): one
CUDA block = one OpenCL work-group, blockIdx.x/y = get_group_id(0/1).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from im2win.cuda.config import DEFAULT, TileConfig
from im2win.cuda.launch import (
    Launch,
    conv_launch,
    direct_launch,
    filter_launch,
    for_shape,
    partial_elems,
    reduce_launch,
    split_slices,
    window_launch,
    window_rows_launch,
)
from im2win.cuda.source import kernel_source
from im2win.metrics import filter_elems, window_nhwc_elems
from im2win.shapes import ConvShape
from im2win.validation import validate


class OpenCLUnavailable(RuntimeError):
    """No OpenCL CPU device (install PoCL: Debian's pocl-opencl-icd, and pyopencl)."""


@functools.cache
def _context():
    try:
        import pyopencl as cl
    except ImportError as exc:
        raise OpenCLUnavailable("pyopencl is not installed (pip install pyopencl)") from exc
    try:
        devices = [d for p in cl.get_platforms() for d in p.get_devices(cl.device_type.CPU)]
    except cl.Error as exc:  # no ICD / platform at all
        raise OpenCLUnavailable(f"no OpenCL platform: {exc}") from exc
    if not devices:
        raise OpenCLUnavailable(
            "no OpenCL CPU device; install PoCL (apt-get install pocl-opencl-icd)"
        )
    ctx = cl.Context([devices[0]])
    return cl, ctx, cl.CommandQueue(ctx)


def device_name() -> str:
    cl, ctx, _ = _context()
    return ctx.devices[0].name


@functools.cache
def _program(config: TileConfig):
    cl, ctx, _ = _context()
    problems = config.problems()
    if problems:
        raise ValueError(f"tile configuration {config} cannot run: {'; '.join(problems)}")
    device = ctx.devices[0]
    if config.threads > device.max_work_group_size:
        raise ValueError(
            f"{config.threads} threads per block exceed the OpenCL device's "
            f"{device.max_work_group_size}"
        )
    return cl.Program(ctx, kernel_source()).build(options=config.options() + ["-cl-std=CL1.2"])


@functools.cache
def _kernel(config: TileConfig, name: str):
    cl, _, _ = _context()
    return cl.Kernel(_program(config), name)


def _run(config: TileConfig, launch: Launch, buffers: list) -> None:
    _, _, queue = _context()
    global_size = (launch.grid[0] * launch.block, *launch.grid[1:])
    _kernel(config, launch.kernel)(
        queue, global_size, (launch.block, 1, 1), *buffers, *launch.scalars()
    )


def _upload(t: torch.Tensor):
    cl, ctx, _ = _context()
    flags = cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR
    return cl.Buffer(ctx, flags, hostbuf=t.contiguous().numpy())


def _upload_strided(x: torch.Tensor):
    """x's storage from the view's first element on: the kernels read it through x.stride()."""
    storage = x.as_strided((x.untyped_storage().nbytes() // 4,), (1,), 0)
    return _upload(storage[x.storage_offset() :])


def _alloc(elems: int):
    cl, ctx, _ = _context()
    return cl.Buffer(ctx, cl.mem_flags.READ_WRITE, size=max(elems, 1) * 4)


def _download(buf, shape: tuple[int, ...]) -> torch.Tensor:
    cl, _, queue = _context()
    host = np.empty(shape, dtype=np.float32)
    cl.enqueue_copy(queue, host, buf)
    queue.finish()
    return torch.from_numpy(host)


def _bias(bias: torch.Tensor | None):
    return _upload(bias if bias is not None else torch.zeros(1))


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride,
    padding,
    config: TileConfig,
) -> torch.Tensor:
    """im2win through the GPU kernels, emulated on the CPU: [N, C, H, W] -> [N, K, P, Q] (float32)."""
    stride, padding = validate(x, weight, bias, stride, padding)
    shape = ConvShape.of(x, weight, stride, padding)
    config = for_shape(config, shape, x.stride())
    slices = split_slices(shape, config, None)  # split-K only where config.split_k asks
    kernel = config.kernel(slices)
    xs = _upload_strided(x)  # an OpenCL buffer starts aligned: float4 loads of x where fused
    fw = _alloc(filter_elems(shape))
    out = _alloc(shape.n * shape.p * shape.q * shape.k)
    if config.fused:  # the convolution reads x itself
        iw = xs
    else:
        iw = _alloc(window_nhwc_elems(shape))
        _run(kernel, window_launch(shape, x.stride()), [xs, iw])
    _run(kernel, filter_launch(shape), [_upload(weight), fw])
    partial = _alloc(partial_elems(shape, config, slices))
    _run(
        kernel,
        conv_launch(shape, config, bias is not None, slices, x.stride()),
        [iw, fw, _bias(bias), out, partial],
    )
    reduce = reduce_launch(shape, config, slices)
    if reduce:
        _run(kernel, reduce, [out, partial])
    return _download(out, (shape.n, shape.p, shape.q, shape.k)).permute(0, 3, 1, 2)


def window_transform(x: torch.Tensor, shape: ConvShape, rows: bool = False) -> torch.Tensor:
    """The window tensor Iw [N, P, Wu, R, C] of `shape` for the float32 CPU tensor x, built by the
    GPU's im2win_window, or with `rows` by im2win_window_rows, emulated on the CPU."""
    iw = _alloc(window_nhwc_elems(shape))
    launch = (window_rows_launch if rows else window_launch)(shape, x.stride())
    _run(for_shape(DEFAULT, shape).kernel(), launch, [_upload_strided(x), iw])
    return _download(iw, (shape.n, shape.p, shape.window_width, shape.r, shape.c))


def direct_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride,
    padding,
    config: TileConfig,
) -> torch.Tensor:
    """The GPU direct-convolution peer, emulated on the CPU: [N, C, H, W] -> [N, K, P, Q]."""
    stride, padding = validate(x, weight, bias, stride, padding)
    shape = ConvShape.of(x, weight, stride, padding)
    out = _alloc(shape.n * shape.k * shape.p * shape.q)
    _run(
        config.kernel(),
        direct_launch(shape, x.stride(), bias is not None),
        [_upload_strided(x), _upload(weight), _bias(bias), out],
    )
    return _download(out, shape.output_shape())
