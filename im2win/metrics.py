"""FLOP counts, throughput, and the sizes of the tensors the implementations allocate.

FLOPs follow the 2 x MACs convention (a multiply and an add). The im2win papers' GPU logs count MACs;
reproductions that compare with them convert explicitly.
"""

from __future__ import annotations

from im2win.shapes import ConvShape

FLOAT32_BYTES = 4


def gflops(shape: ConvShape, time_ms: float) -> float:
    """Throughput in GFLOP/s (2 x MACs) of one convolution that took `time_ms`."""
    return shape.flops / (time_ms * 1e-3) / 1e9


def window_nhwc_elems(shape: ConvShape) -> int:
    """Elements of the NHWC window tensor Iw[N][P][Wu][R][C]."""
    return shape.n * shape.p * shape.window_width * shape.r * shape.c


def window_nchw_elems(shape: ConvShape) -> int:
    """Elements of the paper's NCHW window tensor Iw[N][C][P][Wu*R]."""
    return shape.n * shape.c * shape.p * shape.window_width * shape.r


def im2col_elems(shape: ConvShape) -> int:
    """Elements of the im2col matrix: N x (C*R*S) x (P*Q)."""
    return shape.n * shape.c * shape.r * shape.s * shape.p * shape.q


def filter_elems(shape: ConvShape) -> int:
    return shape.k * shape.c * shape.r * shape.s


def input_elems(shape: ConvShape) -> int:
    return shape.n * shape.c * shape.h * shape.w


def window_transform_elems(shape: ConvShape) -> int:
    """Elements the window transform moves at least: its input read once, its NHWC window tensor
    written."""
    return input_elems(shape) + window_nhwc_elems(shape)


def padded_input_elems(shape: ConvShape) -> int:
    """The input with its zero padding in place (direct_nhwc's copy of it)."""
    py, px = shape.padding
    return shape.n * shape.c * (shape.h + 2 * py) * (shape.w + 2 * px)
