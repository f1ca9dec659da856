"""FLOP counts, throughput and the analytic extra memory of each implementation.

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


def analytic_extra_bytes(
    impl: str, shape: ConvShape, threads: int, panel_floats: int, im2win_work_floats: int
) -> int | None:
    """Workspace an implementation allocates beyond its output, from its formula (bytes).

    im2win: its streamed window bands and filter panels, or the whole window tensor, whichever
    it uses (`im2win_work_floats`, from im2win.implementations.im2win_workspace_floats).
    im2win_nhwc: the NHWC window tensor plus one packed filter panel per thread (`panel_floats`
    each, im2win.cpu.lib().im2win_panel_floats()).
    im2win_nchw: the paper's window tensor plus the paper's reordered filter Fw.
    im2col_gemm: the im2col matrix. direct: nothing. torch_cl: the input and filter reordered to
    channels_last. torch: oneDNN's internal workspace is not documented, so no formula (None).
    """
    elems = {
        "im2win": lambda: im2win_work_floats,
        "im2win_nhwc": lambda: window_nhwc_elems(shape) + threads * panel_floats,
        "im2win_nchw": lambda: window_nchw_elems(shape) + filter_elems(shape),
        "im2col_gemm": lambda: im2col_elems(shape),
        "direct": lambda: 0,
        "torch_cl": lambda: input_elems(shape) + filter_elems(shape),
    }
    if impl not in elems:
        return None
    return elems[impl]() * FLOAT32_BYTES
