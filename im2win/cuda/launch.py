"""Grid and block math of the GPU im2win kernels, shared by the CUDA launcher and the OpenCL runner.

The only place that knows how many blocks each kernel needs and which runtime flags a shape allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from im2win.cuda.config import TileConfig
from im2win.metrics import filter_elems, window_nhwc_elems
from im2win.shapes import ConvShape

ELEMENTWISE_BLOCK = 256  # threads per block of the transform kernels


@dataclass(frozen=True)
class Launch:
    kernel: str
    grid: tuple[int, int]
    block: int
    args: tuple  # the scalar arguments, in kernel order, after the buffers
    types: str  # one letter per scalar: "i" int32, "l" int64 (the kernel's i64)

    def scalars(self) -> list:
        """The scalar arguments as typed numpy scalars, ready for cuda.core or pyopencl."""
        return [
            np.int64(a) if t == "l" else np.int32(a)
            for a, t in zip(self.args, self.types, strict=True)
        ]


INT32_MAX = 2**31 - 1


def for_shape(config: TileConfig, shape: ConvShape) -> TileConfig:
    """`config` with 64-bit offsets when some buffer of `shape` has 2**31 elements or more."""
    largest = max(
        window_nhwc_elems(shape),  # window tensor
        shape.n * shape.p * shape.q * shape.k,  # output
        filter_elems(shape),  # filter
    )
    return config if config.wide_index or largest <= INT32_MAX else config.replace(wide_index=True)


def _blocks(n: int, per: int) -> int:
    return -(-n // per)


def window_launch(shape: ConvShape, strides: tuple[int, int, int, int]) -> Launch:
    """im2win_window: one thread per element of Iw[N][P][Wu][R][C]."""
    total = window_nhwc_elems(shape)
    args = (
        *strides,
        shape.c,
        shape.h,
        shape.w,
        shape.r,
        shape.stride[0],
        *shape.padding,
        shape.p,
        shape.window_width,
        total,
    )
    return Launch(
        "im2win_window",
        (_blocks(total, ELEMENTWISE_BLOCK), 1),
        ELEMENTWISE_BLOCK,
        args,
        "llll" + "i" * 9 + "l",
    )


def filter_launch(shape: ConvShape) -> Launch:
    """im2win_filter: one thread per element of Fw[T][K]."""
    total = filter_elems(shape)
    args = (shape.k, shape.c, shape.r, shape.s, total)
    return Launch(
        "im2win_filter", (_blocks(total, ELEMENTWISE_BLOCK), 1), ELEMENTWISE_BLOCK, args, "iiiil"
    )


def conv_launch(shape: ConvShape, config: TileConfig, has_bias: bool) -> Launch:
    """im2win_conv: one block per BM x BN output tile; float4 loads where addresses align.

    A rows start at multiples of R*C and step by 4 only when C % 4 == 0; B rows are K long.
    """
    m = shape.n * shape.p * shape.q
    vec_a = int(shape.c % 4 == 0)
    vec_b = int(shape.k % 4 == 0)
    args = (
        int(has_bias),
        shape.n,
        shape.c,
        shape.k,
        shape.r,
        shape.s,
        shape.stride[1],
        shape.p,
        shape.q,
        shape.window_width,
        vec_a,
        vec_b,
    )
    grid = (_blocks(m, config.bm), _blocks(shape.k, config.bn))
    return Launch("im2win_conv", grid, config.threads, args, "i" * len(args))


DIRECT_K = 4  # output channels per thread of direct_conv (the kernel's default)


def direct_launch(shape: ConvShape, strides: tuple[int, int, int, int], has_bias: bool) -> Launch:
    """direct_conv: one thread per output pixel and DIRECT_K output channels."""
    total = shape.n * _blocks(shape.k, DIRECT_K) * shape.p * shape.q
    args = (
        int(has_bias),
        *strides,
        *shape.kernel_args(),
    )
    return Launch(
        "direct_conv",
        (_blocks(total, ELEMENTWISE_BLOCK), 1),
        ELEMENTWISE_BLOCK,
        args,
        "i" + "llll" + "i" * 13,
    )
