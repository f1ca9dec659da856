"""Launch the GPU im2win kernels on PyTorch CUDA tensors through cuda.core, on torch's current stream.

Compiles (im2win/cuda/compile.py) for the device's architecture on first use, checks the tile
configuration against the device's limits before launching, and keeps PyTorch as the allocator, so
torch.cuda.max_memory_allocated() sees the window tensor and the reordered filter.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from im2win.cuda import tuned
from im2win.cuda.compile import KERNELS, compile_cubin
from im2win.cuda.config import DEFAULT, STATIC_SHARED_LIMIT, TileConfig
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
from im2win.metrics import filter_elems, window_nhwc_elems
from im2win.shapes import ConvShape


class _TorchStream:
    """torch's current stream in the __cuda_stream__ protocol cuda.core understands."""

    def __init__(self, stream: torch.cuda.Stream):
        self._handle = stream.cuda_stream

    def __cuda_stream__(self):
        return (0, self._handle)


@functools.cache
def _device(index: int):
    from cuda.core import Device

    dev = Device(index)
    dev.set_current()
    return dev


def device_arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm_{major}{minor}"


@functools.cache
def _kernels(config: TileConfig, arch: str, index: int) -> dict:
    from cuda.core import ObjectCode

    _device(index)
    module = ObjectCode.from_cubin(compile_cubin(config, arch).cubin)
    return {name: module.get_kernel(name) for name in KERNELS}


def sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def launch_problems(config: TileConfig, index: int) -> list[str]:
    """Why `config` cannot run on device `index` (empty when it can)."""
    problems = config.problems()
    props = torch.cuda.get_device_properties(index)
    if config.threads > 1024:
        problems.append(f"{config.threads} threads per block > the device's 1024")
    smem_limit = getattr(props, "shared_memory_per_block", STATIC_SHARED_LIMIT)
    if config.shared_bytes > smem_limit:
        problems.append(
            f"{config.shared_bytes} bytes of shared memory per block > the device's "
            f"{smem_limit} (static limit); use smaller bm, bn or bk"
        )
    return problems


def check_launchable(config: TileConfig, index: int) -> None:
    """ValueError naming the limit when `config` cannot run on device `index`."""
    problems = launch_problems(config, index)
    if problems:
        name = torch.cuda.get_device_properties(index).name
        raise ValueError(
            f"tile configuration {config} cannot launch on {name}: {'; '.join(problems)}"
        )


def _stored(shape: ConvShape, index: int) -> tuple[str, TileConfig] | None:
    """The configuration stored for `shape` on this device's architecture (im2win.cuda.tuned.stored)
    where it can launch for the shape: a default measured on other layers may not (a window-band
    variant's shared memory grows with the filter's width and stride)."""
    found = tuned.stored(device_arch(index), shape)
    if found is None or launch_problems(for_shape(found[1], shape), index):
        return None
    return found


def tile_source(shape: ConvShape, index: int) -> str:
    """Where resolve_config's configuration for `shape` comes from without one given: the source
    im2win.cuda.tuned.stored names, or "default" (DEFAULT)."""
    found = _stored(shape, index)
    return found[0] if found else "default"


def _prepared(kernels: dict, launch: Launch) -> tuple:
    """(kernel, cuda.core LaunchConfig, scalar arguments) of `launch`."""
    from cuda.core import LaunchConfig

    config = LaunchConfig(grid=launch.grid, block=(launch.block, 1, 1))
    return kernels[launch.kernel], config, launch.scalars()


def _launch(kernels: dict, launch: Launch, stream, buffers: list) -> None:
    from cuda.core import launch as cuda_launch

    kernel, config, scalars = _prepared(kernels, launch)
    cuda_launch(stream, config, kernel, *buffers, *scalars)


def resolve_config(
    shape: ConvShape, index: int, config: TileConfig | None = None, strides=None
) -> TileConfig:
    """The configuration conv2d runs `shape` with on device `index`: `config`, else the one stored
    for this shape on this architecture (a search's or a run's), else the architecture's default
    if a run stored one (either only where it can launch for the shape), else DEFAULT (64-bit
    offsets if needed; a fused kernel's for an input with `strides`, None: contiguous)."""
    if config is None:
        found = _stored(shape, index)
        config = found[1] if found else DEFAULT
    return for_shape(config, shape, strides)


def slices_for(shape: ConvShape, index: int, config: TileConfig | None = None) -> int:
    """The slices of the reduction (split-K) conv2d runs `shape` with on device `index`."""
    return split_slices(shape, resolve_config(shape, index, config), sm_count(index))


def workspace_elems(shape: ConvShape, index: int, config: TileConfig | None = None) -> int:
    """Floats conv2d allocates besides the output: window tensor (none where the transform is
    fused), reordered filter and split-K's partial sums."""
    config = resolve_config(shape, index, config)
    slices = split_slices(shape, config, sm_count(index))
    return _window_elems(shape, config) + filter_elems(shape) + partial_elems(shape, config, slices)


def _window_elems(shape: ConvShape, config: TileConfig) -> int:
    """The window tensor's floats: none where the convolution reads x itself (fused)."""
    return 0 if config.fused else window_nhwc_elems(shape)


@dataclass(frozen=True)
class CallPlan:
    """Everything conv2d works out for one shape, input strides, device and configuration before
    it launches: the kernels and their launches (window (none where the transform is fused),
    filter, convolution and, with split-K, the reduction) and the floats to allocate."""

    kernels: dict
    launches: tuple[Launch, ...]
    prepared: tuple[tuple, ...]  # each launch's _prepared()
    window_elems: int
    filter_elems: int
    partial_elems: int
    fused: bool  # the convolution reads x itself (TileConfig.fused): no window tensor


@functools.lru_cache(maxsize=64)
def _plan(
    shape: ConvShape, strides, aligned: bool, has_bias: bool, index: int, config, version
) -> CallPlan:
    config = resolve_config(shape, index, config, strides)
    check_launchable(config, index)
    slices = split_slices(shape, config, sm_count(index))
    launches = [
        *([] if config.fused else [window_launch(shape, strides)]),
        filter_launch(shape),
        conv_launch(shape, config, has_bias, slices, strides, aligned),
    ]
    reduce = reduce_launch(shape, config, slices)
    launches = (*launches, reduce) if reduce else tuple(launches)
    kernels = _kernels(config.kernel(slices), device_arch(index), index)
    return CallPlan(
        kernels,
        launches,
        tuple(_prepared(kernels, launch) for launch in launches),
        _window_elems(shape, config),
        filter_elems(shape),
        partial_elems(shape, config, slices),
        config.fused,
    )


def plan(
    shape: ConvShape,
    strides,
    has_bias: bool,
    index: int,
    config: TileConfig | None = None,
    aligned: bool = True,
) -> CallPlan:
    """conv2d's plan for `shape` with input `strides` (and a bias or none) on device `index`, made
    once and kept (the last 64) while the tuned-configuration files resolve_config reads stay as
    they were. `aligned`: the input's data starts on 16 bytes (a fused kernel's float4 loads)."""
    version = tuned.version(device_arch(index))
    return _plan(shape, tuple(strides), aligned, has_bias, index, config, version)


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride,
    padding,
    config: TileConfig | None = None,
    events: list | None = None,
) -> torch.Tensor:
    """im2win on validated CUDA float32 tensors: window transform, filter reorder, convolution
    (and split-K's reduction where the layer has too few tiles for the GPU), as plan() makes them.

    config: the tile configuration; default: the tuned one for this shape and architecture, else
    the architecture's default, else DEFAULT (resolve_config).
    events: where given, each kernel launch is bracketed by CUDA events on the stream, appended as
    (kernel name, start, end) (harness.timing.measure_cuda_phases times them).

    Returns [N, K, P, Q] with channels_last memory.
    """
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    shape = ConvShape.of(x, weight, stride, padding)
    call = plan(shape, x.stride(), bias is not None, index, config, x.data_ptr() % 16 == 0)
    stream = _TorchStream(torch.cuda.current_stream(x.device))
    weight = weight.contiguous()
    # a fused convolution reads x where the others read the window tensor
    iw = x if call.fused else torch.empty(call.window_elems, device=x.device)
    fw = torch.empty(call.filter_elems, device=x.device)
    out = torch.empty(shape.output_shape(), device=x.device, memory_format=torch.channels_last)
    partial = torch.empty(call.partial_elems, device=x.device) if call.partial_elems else out
    # the convolution reads no bias where the plan says there is none: any pointer will do
    b = bias.contiguous() if bias is not None else out
    buffers = {
        "im2win_window": [x.data_ptr(), iw.data_ptr()],
        "im2win_filter": [weight.data_ptr(), fw.data_ptr()],
        "im2win_conv": [
            iw.data_ptr(),
            fw.data_ptr(),
            b.data_ptr(),
            out.data_ptr(),
            partial.data_ptr(),
        ],
        "splitk_reduce": [out.data_ptr(), partial.data_ptr()],
    }
    from cuda.core import launch as cuda_launch

    for launch, (kernel, config, scalars) in zip(call.launches, call.prepared, strict=True):
        args = buffers[launch.kernel]
        if events is None:
            cuda_launch(stream, config, kernel, *args, *scalars)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        cuda_launch(stream, config, kernel, *args, *scalars)
        end.record()
        events.append((launch.kernel, start, end))
    return out


def window_transform(x: torch.Tensor, shape: ConvShape, rows: bool = False) -> torch.Tensor:
    """The window tensor Iw [N, P, Wu, R, C] of `shape` for the CUDA float32 input x, built by
    im2win_window (conv2d's), or with `rows` by im2win_window_rows (the kernel up to c72bc28), so
    that the GPU run can time the two side by side."""
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    kernels = _kernels(for_shape(DEFAULT, shape).kernel(), device_arch(index), index)
    iw = torch.empty(shape.n, shape.p, shape.window_width, shape.r, shape.c, device=x.device)
    launch = (window_rows_launch if rows else window_launch)(shape, x.stride())
    stream = _TorchStream(torch.cuda.current_stream(x.device))
    _launch(kernels, launch, stream, [x.data_ptr(), iw.data_ptr()])
    return iw


def direct_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding
) -> torch.Tensor:
    """The direct-convolution peer on validated CUDA float32 tensors; NCHW output, no workspace."""
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    shape = ConvShape.of(x, weight, stride, padding)
    kernels = _kernels(for_shape(DEFAULT, shape).kernel(), device_arch(index), index)
    weight = weight.contiguous()
    out = torch.empty(shape.output_shape(), device=x.device)
    b = bias.contiguous() if bias is not None else torch.zeros(1, device=x.device)
    _launch(
        kernels,
        direct_launch(shape, x.stride(), bias is not None),
        _TorchStream(torch.cuda.current_stream(x.device)),
        [x.data_ptr(), weight.data_ptr(), b.data_ptr(), out.data_ptr()],
    )
    return out
