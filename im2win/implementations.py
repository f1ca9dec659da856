"""Every convolution implementation the suite measures, by its string id, on CPU and CUDA tensors.

Ids are the same everywhere: code, asv parameters, CSV columns, plot legends.

    im2win       the optimized im2win: NHWC windows (the follow-up paper's layout) built block by
                 block into a per-thread buffer and consumed at once by a register-blocked SIMD GEMM
                 micro-kernel over the overlapping windows; output NCHW with channels_last memory.
    im2win_packed  im2win over its filter packed ahead and kept across calls while the weight
                 lives unchanged (im2win.packed.packed_for), on channels_last input and filter
                 made before the call: im2win as im2win.nn.Conv2d runs it in a network, the peer
                 of torch_cl_net.
    im2win_nhwc  the same kernel on a materialised NHWC window tensor (transform, then convolve).
    im2win_nchw  the HPEC 2022 paper's own method: NCHW window transform, filter transform, one SIMD
                 dot product of length R*S per output and input channel.
    direct       direct convolution compiled with the same flags (register-blocked, SIMD over columns).
    direct_nhwc  the follow-up paper's direct convolution over NHWC input, with im2win's micro-kernel
                 and schedule: each window read from the input's rows in place (R runs of S*C
                 floats), no window transform; the input reordered to channels_last and zero-padded
                 first where it is not so already (timed); output NCHW with channels_last memory.
    im2col_gemm  F.unfold + one batched GEMM through torch (MKL/oneDNN): PyTorch's GEMM path.
    im2col_gemm_loop  the same with one GEMM per image.
    torch        F.conv2d on NCHW tensors (oneDNN).                                    [baseline]
    torch_cl     F.conv2d after reordering input and filter to channels_last (oneDNN's fastest path).
    torch_cl_net F.conv2d on input and filter that are channels_last already, as in a channels_last
                 network (model.to(memory_format=torch.channels_last)): oneDNN's fastest path with
                 no reorder of the caller's tensors; the reproduction gives it its tensors so,
                 made before the timing.

On CUDA tensors, under the same ids: im2win and direct (the NVRTC-compiled kernels of im2win/cuda),
im2col_gemm (unfold + cuBLAS) and torch (cuDNN).

Each function takes validated arguments: float32 tensors x [N, C, H, W] (any strides), weight
[K, C, R, S], bias [K] or None, stride and padding as pairs; threads come from torch.get_num_threads().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from im2win.cpu import lib
from im2win.metrics import (
    filter_elems,
    im2col_elems,
    input_elems,
    padded_input_elems,
    window_nchw_elems,
    window_nhwc_elems,
)
from im2win.packed import im2win_packed, packed_filter_floats, packed_for, prepacked_launch
from im2win.plan import (
    PLANES,
    STREAMED,
    STREAMED_SPLIT,
    STREAMED_TILES,
    direct_nhwc_work_floats,
    filter_work_floats,
    fused_item_blocks,
    fused_splits_channels,
    im2win_workspace_floats,
    path_plan,
    prepacked_work_floats,
)
from im2win.shapes import ConvShape
from im2win.streamed import (
    Launch,
    contiguous_params,
    kernel_phases,
    ptr,
)
from im2win.transform import window_nchw, window_nhwc, window_shared


def im2win_with_phases(x, weight, bias, stride, padding) -> tuple[torch.Tensor, dict]:
    """im2win on validated arguments, and where its time went: {"transform_ms": building windows,
    "pack_ms": packing the filter, "wait_ms": how long the first thread done waited for the last,
    "path": "streamed bands" (", output channels split": each thread its share of them over
    every row; ", 2 channel blocks a tile": see fused_item_blocks), "window planes a
    thread" or "whole window tensor"}. The kernel's own timers: the slowest thread's times, and
    on the whole window tensor the transform's parallel region."""
    shape = ConvShape.of(x, weight, stride, padding)
    threads = torch.get_num_threads()
    out, seconds = im2win_launch(x, shape, threads).run(x, *contiguous_params(weight, bias))
    path = path_plan(shape, threads)[0]
    if path == STREAMED and fused_splits_channels(shape, threads):
        path = STREAMED_SPLIT
    elif path == STREAMED and (blocks := fused_item_blocks(shape, threads)) > 1:
        path = STREAMED_TILES.format(blocks)
    return out, kernel_phases(seconds) | {"path": path}


def im2win_launch(x, shape: ConvShape, threads: int) -> Launch:
    """im2win's kernel call for `x` of `shape` on `threads` threads, on the path it takes
    (path_plan): streamed bands, window planes a thread, or the whole window tensor first."""
    path, work_floats = path_plan(shape, threads)
    kernel = {STREAMED: "im2win_conv_fused", PLANES: "im2win_conv_planes"}.get(
        path, "im2win_conv_whole"
    )
    return Launch.of(kernel, shape.x_args(x), shape.output_shape(), work_floats)


def _im2win(x, weight, bias, stride, padding):
    return im2win_with_phases(x, weight, bias, stride, padding)[0]


def planned_call(impl: str, x, weight, bias, stride, padding) -> Callable | None:
    """For later arguments alike these (checked) ones, where `impl` has one: a call that only
    launches the kernel (im2win where it streams windows over a contiguous filter; im2win_packed,
    its filter found packed by packed_for at each call), (x, weight, bias) -> output. None
    elsewhere: CUDA tensors, a bias that is not contiguous, the other implementations."""
    if x.is_cuda or not (bias is None or bias.is_contiguous()):
        return None
    shape, threads = ConvShape.of(x, weight, stride, padding), torch.get_num_threads()
    if impl == "im2win" and weight.is_contiguous():
        return im2win_launch(x, shape, threads)
    if impl == "im2win_packed":
        launch = prepacked_launch(x, shape)
        return lambda x, weight, bias: launch(x, packed_for(weight).data, bias)
    return None


def _im2win_packed_phases(x, weight, bias, stride, padding) -> tuple[torch.Tensor, dict]:
    """im2win over `weight` packed ahead: on the first call with it, then kept while it lives
    unchanged (packed_for), as im2win.nn.Conv2d keeps its own."""
    return im2win_packed(x, packed_for(weight), bias, stride, padding)


def _convolve_nhwc(iw, shape, weight, bias) -> torch.Tensor:
    """Phase 2 of im2win_nhwc: the micro-kernel over a materialised NHWC window tensor (window_nhwc,
    unblocked)."""
    weight, bias = contiguous_params(weight, bias)
    out = torch.empty(shape.output_shape(), memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    work = torch.empty(filter_work_floats(shape, threads))
    lib().im2win_conv_nhwc(
        iw.data_ptr(),
        weight.data_ptr(),
        ptr(bias),
        out.data_ptr(),
        *shape.window_args(),
        shape.c,
        work.data_ptr(),
        None,
        threads,
    )
    return out


def _window_for_nhwc(x, shape: ConvShape) -> torch.Tensor:
    """Phase 1 of im2win_nhwc: the whole window tensor, written as its convolution will read it."""
    return window_nhwc(x, shape, shared=window_shared(shape, torch.get_num_threads()))


def _im2win_nhwc(x, weight, bias, stride, padding):
    shape = ConvShape.of(x, weight, stride, padding)
    return _convolve_nhwc(_window_for_nhwc(x, shape), shape, weight, bias)


def _im2win_nchw(x, weight, bias, stride, padding):
    shape = ConvShape.of(x, weight, stride, padding)
    weight, bias = contiguous_params(weight, bias)
    threads = torch.get_num_threads()
    iw = window_nchw(x, shape)
    fw = torch.empty(weight.shape)
    lib().im2win_filter_nchw(
        weight.data_ptr(), shape.k, shape.c, shape.r, shape.s, fw.data_ptr(), threads
    )
    out = torch.empty(shape.output_shape())
    lib().im2win_conv_nchw(
        iw.data_ptr(),
        fw.data_ptr(),
        ptr(bias),
        out.data_ptr(),
        *shape.window_args(),
        threads,
    )
    return out


def _direct(x, weight, bias, stride, padding):
    shape = ConvShape.of(x, weight, stride, padding)
    x = x.contiguous()
    weight, bias = contiguous_params(weight, bias)
    out = torch.empty(shape.output_shape())
    lib().direct_conv_nchw(
        x.data_ptr(),
        weight.data_ptr(),
        ptr(bias),
        out.data_ptr(),
        *shape.kernel_args(),
        torch.get_num_threads(),
    )
    return out


def nhwc_input(x: torch.Tensor, shape: ConvShape) -> torch.Tensor:
    """x as direct_nhwc reads it: channels_last memory with its zero padding in place; x itself
    where it is so already (channels_last and no padding), else one copy."""
    py, px = shape.padding
    if not (py or px) and x.is_contiguous(memory_format=torch.channels_last):
        return x
    n, c, h, w = x.shape
    xp = torch.empty((n, c, h + 2 * py, w + 2 * px), memory_format=torch.channels_last)
    xp[:, :, py : py + h, px : px + w] = x
    for border in (xp[:, :, :py], xp[:, :, py + h :], xp[..., :px], xp[..., px + w :]):
        border.zero_()
    return xp


def _direct_nhwc(x, weight, bias, stride, padding):
    shape = ConvShape.of(x, weight, stride, padding)
    xp = nhwc_input(x, shape)
    weight, bias = contiguous_params(weight, bias)
    out = torch.empty(shape.output_shape(), memory_format=torch.channels_last)
    work = torch.empty(direct_nhwc_work_floats(shape))
    _, c, hp, wp = xp.shape  # the padded input's rows and images, dense in channels_last memory
    lib().direct_conv_nhwc(
        xp.data_ptr(),
        hp * wp * c,
        wp * c,
        shape.n,
        c,
        hp,
        wp,
        shape.k,
        shape.r,
        shape.s,
        *shape.stride,
        shape.p,
        shape.q,
        weight.data_ptr(),
        ptr(bias),
        out.data_ptr(),
        work.data_ptr(),
        None,
        torch.get_num_threads(),
    )
    return out


def _im2col_gemm(x, weight, bias, stride, padding):
    """One batched GEMM over the whole im2col matrix (cuBLAS / MKL strided-batched, the filter
    broadcast with stride 0): the strongest form of the im2col peer."""
    shape = ConvShape.of(x, weight, stride, padding)
    cols = F.unfold(x, (shape.r, shape.s), padding=padding, stride=stride)  # N, C*R*S, P*Q
    w2d = weight.reshape(shape.k, -1)  # K, C*R*S
    out = torch.matmul(w2d, cols)  # N, K, P*Q
    if bias is not None:
        out += bias[:, None]
    return out.view(shape.output_shape())


def _im2col_gemm_loop(x, weight, bias, stride, padding):
    """im2col + one GEMM per image (the per-image loop the suite first measured)."""
    shape = ConvShape.of(x, weight, stride, padding)
    cols = F.unfold(x, (shape.r, shape.s), padding=padding, stride=stride)  # N, C*R*S, P*Q
    w2d = weight.reshape(shape.k, -1)  # K, C*R*S
    out = torch.empty(shape.n, shape.k, shape.p * shape.q, device=x.device)
    for n in range(shape.n):
        if bias is None:
            torch.mm(w2d, cols[n], out=out[n])
        else:
            torch.addmm(bias[:, None], w2d, cols[n], out=out[n])
    return out.view(shape.output_shape())


def _torch(x, weight, bias, stride, padding):
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


def _torch_cl(x, weight, bias, stride, padding):
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


def _im2win_cuda(x, weight, bias, stride, padding):
    from im2win.cuda.runtime import conv2d

    return conv2d(x, weight, bias, stride, padding)


def _direct_cuda(x, weight, bias, stride, padding):
    from im2win.cuda.runtime import direct_conv2d

    return direct_conv2d(x, weight, bias, stride, padding)


def _cuda_window_elems(shape: ConvShape) -> int:
    """The GPU im2win's workspace on the current GPU: the whole NHWC window tensor, the reordered
    filter and split-K's partial sums where the layer has too few tiles for the GPU."""
    from im2win.cuda.runtime import workspace_elems

    return workspace_elems(shape, torch.cuda.current_device())


@dataclass(frozen=True)
class Implementation:
    """Everything about one implementation: how it runs on CPU and CUDA tensors, the window
    transform timed on its own, and the workspace it allocates beyond its output (float32
    elements, from its formula; None: no formula, e.g. oneDNN's and cuDNN's internal workspaces).
    """

    id: str
    run: Callable[..., torch.Tensor] | None  # on CPU tensors
    cuda_run: Callable[..., torch.Tensor] | None = None  # on CUDA tensors, where supported
    extra_elems: Callable[[ConvShape, int], int] | None = None  # (shape, threads), on the CPU
    cuda_extra_elems: Callable[[ConvShape], int] | None = None
    # the window transform alone, materialised: (x, shape) -> Iw
    window_transform: Callable[[torch.Tensor, ConvShape], torch.Tensor] | None = None
    # the kernel's own timers of its phases: (x, w, b, stride, padding) -> {"transform_ms", ...}
    phases_ms: Callable[..., dict] | None = None
    # the memory format its caller's input and filter come in (made outside the timed call)
    memory_format: torch.memory_format = torch.contiguous_format

    def arguments(self, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x and weight in the memory format this implementation's callers hold them in."""
        return (
            x.contiguous(memory_format=self.memory_format),
            weight.contiguous(memory_format=self.memory_format),
        )

    def extra_bytes(self, shape: ConvShape, threads: int, cuda: bool = False) -> int | None:
        """Workspace beyond the output, in bytes, from the formula (None: no formula)."""
        if cuda:
            return None if self.cuda_extra_elems is None else self.cuda_extra_elems(shape) * 4
        return None if self.extra_elems is None else self.extra_elems(shape, threads) * 4


IMPLEMENTATIONS: dict[str, Implementation] = {
    impl.id: impl
    for impl in [
        Implementation(
            "im2win",
            _im2win,
            _im2win_cuda,
            extra_elems=im2win_workspace_floats,
            cuda_extra_elems=_cuda_window_elems,
            phases_ms=lambda *args: im2win_with_phases(*args)[1],
        ),
        Implementation(  # the packed filter (kept across calls) beside the bands
            "im2win_packed",
            lambda *args: _im2win_packed_phases(*args)[0],
            extra_elems=lambda shape, threads: (
                packed_filter_floats(shape) + prepacked_work_floats(shape, threads)
            ),
            phases_ms=lambda *args: _im2win_packed_phases(*args)[1],
            memory_format=torch.channels_last,
        ),
        Implementation(
            "im2win_nhwc",
            _im2win_nhwc,
            extra_elems=lambda shape, threads: (
                window_nhwc_elems(shape) + filter_work_floats(shape, threads)
            ),
            window_transform=_window_for_nhwc,
        ),
        Implementation(  # the paper's window tensor plus its reordered filter Fw
            "im2win_nchw",
            _im2win_nchw,
            extra_elems=lambda shape, _: window_nchw_elems(shape) + filter_elems(shape),
            window_transform=window_nchw,
        ),
        Implementation(
            "direct",
            _direct,
            _direct_cuda,
            extra_elems=lambda shape, _: 0,
            cuda_extra_elems=lambda shape: 0,
        ),
        Implementation(  # a padded channels_last copy of the input, unless it is one already
            "direct_nhwc",
            _direct_nhwc,
            extra_elems=lambda shape, _: padded_input_elems(shape) + direct_nhwc_work_floats(shape),
        ),
        Implementation(  # the im2col matrix; unfold + GEMM (MKL on the CPU, cuBLAS on CUDA)
            "im2col_gemm",
            _im2col_gemm,
            _im2col_gemm,
            extra_elems=lambda shape, _: im2col_elems(shape),
            cuda_extra_elems=im2col_elems,
        ),
        Implementation(
            "im2col_gemm_loop",
            _im2col_gemm_loop,
            _im2col_gemm_loop,
            extra_elems=lambda shape, _: im2col_elems(shape),
            cuda_extra_elems=im2col_elems,
        ),
        Implementation("torch", _torch, _torch),  # F.conv2d: oneDNN on the CPU, cuDNN on CUDA
        Implementation(  # the input and filter reordered to channels_last
            "torch_cl",
            _torch_cl,
            extra_elems=lambda shape, _: input_elems(shape) + filter_elems(shape),
        ),
        Implementation("torch_cl_net", _torch, memory_format=torch.channels_last),
    ]
}
BASELINE = "torch"
