"""The im2win window transforms (phase 1 of every im2win convolution), callable on their own.

Two layouts (see im2win/cpu/im2win_cpu.cpp for the index formulas):
    "nhwc": Iw[N][P][Wu][R][C]  (the optimized `im2win` kernel's input)
    "nchw": Iw[N][C][P][Wu*R]   (the paper's layout, `im2win_nchw`)
with Wu = (Q - 1) * stride_w + S. Zero padding is applied while windows are built, so no padded copy of
the input exists. The input is read through its strides: any memory format or view works, uncopied.
"""

from __future__ import annotations

import torch

from im2win.cpu import lib, per_kernels
from im2win.metrics import window_nhwc_elems
from im2win.shapes import ConvShape


def _args(x: torch.Tensor, shape: ConvShape) -> list:
    return [
        x.data_ptr(),
        *x.stride(),
        shape.n,
        shape.c,
        shape.h,
        shape.w,
        shape.r,
        shape.s,
        *shape.stride,
        *shape.padding,
        shape.p,
        shape.q,
    ]


def window_nhwc(
    x: torch.Tensor, shape: ConvShape, block: int | None = None, shared: bool = False
) -> torch.Tensor:
    """Iw of shape [N, P, Wu, R, C] for the convolution `shape` of the float32 CPU tensor x; with
    `block` < C channels a block (it must divide C), [N, P, C / block, Wu, R, block]: each block a
    window tensor of its channels, the layout im2win reads where it packs the filter panel by panel
    (window_block). shared: every thread will read all of it (window_shared); where the two
    threads' cores then share no last-level cache, it is written to memory past the caches."""
    block = shape.c if block is None else block
    if not 1 <= block <= shape.c or shape.c % block:
        raise ValueError(
            f"a block of {block} channels does not divide C = {shape.c}; pass a divisor of C"
        )
    iw = torch.empty(shape.n, shape.p, shape.c // block, shape.window_width, shape.r, block)
    lib().im2win_transform_nhwc(
        *_args(x, shape), iw.data_ptr(), block, torch.get_num_threads(), shared
    )
    return (
        iw if block < shape.c else iw.view(shape.n, shape.p, shape.window_width, shape.r, shape.c)
    )


@per_kernels
def window_block(shape: ConvShape, threads: int) -> int:
    """Channels a block of the window tensor im2win materialises for `shape` on `threads` threads
    (C: unblocked): the largest block whose filter panel, one a thread, fits beside the window
    tensor within 0.495 of the im2col matrix (the memory goal is half), at least a panel of the
    kernel's PANEL_FLOATS."""
    m = shape.n * shape.p * shape.q
    return lib().im2win_window_block(
        shape.k, shape.c, shape.r, shape.s, m, window_nhwc_elems(shape), threads
    )


@per_kernels
def window_shared(shape: ConvShape, threads: int) -> bool:
    """Whether every thread of im2win's convolution over the whole window tensor reads all of it:
    few pixels, one block of them, the output channels split between the threads (the kernel's
    im2win_window_shared)."""
    return bool(lib().im2win_window_shared(shape.k, shape.n * shape.p * shape.q, threads))


def window_nchw(x: torch.Tensor, shape: ConvShape) -> torch.Tensor:
    """Iw of shape [N, C, P, Wu * R], the paper's layout."""
    iw = torch.empty(shape.n, shape.c, shape.p, shape.window_width * shape.r)
    lib().im2win_transform_nchw(*_args(x, shape), iw.data_ptr(), torch.get_num_threads())
    return iw


WINDOW_TRANSFORMS = {"nhwc": window_nhwc, "nchw": window_nchw}
