"""Which path im2win takes for a convolution, and the workspace it allocates there: window bands
streamed a block of output rows at a time (the filter packed once), window planes a thread, or the
whole window tensor (in blocks of channels where the filter is packed panel by panel). Each is the
compiled kernel's own plan, read through ctypes, per kernel source (im2win.cpu.per_kernels)."""

from __future__ import annotations

import ctypes

from im2win.cpu import lib, per_kernels
from im2win.shapes import ConvShape
from im2win.transform import window_block


@per_kernels
def fused_plan(shape: ConvShape, threads: int) -> tuple[int, bool]:
    """(floats of the streamed im2win's work buffer, whether it packs the whole filter once): the
    kernel's plan (im2win_fused_plan). The buffer holds window bands a thread, and either the whole
    filter packed once or one filter panel a thread."""
    rows, band, work, packs_once = ctypes.c_long(), ctypes.c_long(), ctypes.c_long(), ctypes.c_int()
    lib().im2win_fused_plan(
        *shape.window_args(),
        threads,
        ctypes.byref(rows),
        ctypes.byref(band),
        ctypes.byref(work),
        ctypes.byref(packs_once),
    )
    return work.value, bool(packs_once.value)


@per_kernels
def prepacked_work_floats(shape: ConvShape, threads: int) -> int:
    """Floats of the work buffer of im2win over a filter packed ahead of the call (pack_filter):
    window bands a thread, nothing for the filter (the kernel's im2win_prepacked_plan)."""
    rows, band, work = ctypes.c_long(), ctypes.c_long(), ctypes.c_long()
    lib().im2win_prepacked_plan(
        *shape.window_args(), threads, ctypes.byref(rows), ctypes.byref(band), ctypes.byref(work)
    )
    return work.value


@per_kernels
def fused_splits_channels(shape: ConvShape, threads: int) -> bool:
    """Whether the streamed im2win gives each thread a fixed share of the output channels over every
    row (each thread building every band) instead of handing out (rows, channels) items: on two
    threads, where the packed filter outgrows a core's L2 cache but a thread's share fits, and the
    memory goal leaves row blocks of few pixels (the kernel's im2win_fused_splits_k)."""
    return bool(lib().im2win_fused_splits_k(*shape.window_args(), threads))


@per_kernels
def fused_item_blocks(shape: ConvShape, threads: int) -> int:
    """Channel blocks of the streamed im2win's work items, each tile of pixels through all of them
    before the next tile (1: one block over the item's pixels): every block where the whole
    filter, packed once, fits in L1 (conv7; conv3 too on 48 KB of L1, with AVX-512), and on Intel
    CPUs two with AVX-512 where a pair's panels fit in a quarter of L2 (conv8-conv10 at batch 4);
    the kernel's im2win_fused_item_blocks. 1 on a kernel_ab variant older than that schedule."""
    kernels = lib()
    if not hasattr(kernels, "im2win_fused_item_blocks"):
        return 1
    return int(kernels.im2win_fused_item_blocks(*shape.window_args(), threads))


def fused_packs_filter_once(shape: ConvShape, threads: int) -> bool:
    """Whether the streamed im2win packs the whole filter once: where the NHWC kernels do
    (filter_packed_once), and also where K <= M / 2 and the packed filter leaves room for window
    bands of 2 rows a thread within 0.495 of the im2col matrix."""
    return fused_plan(shape, threads)[1]


@per_kernels
def filter_work_floats(shape: ConvShape, threads: int, block: int | None = None) -> int:
    """Floats of the NHWC kernel's filter workspace on a window in blocks of `block` channels (None:
    unblocked): the whole filter packed once, or one panel a thread where that would outgrow a
    quarter of the im2col matrix (the kernel's plan)."""
    m = shape.n * shape.p * shape.q
    return lib().im2win_filter_work_floats(
        shape.k, shape.c, shape.r, shape.s, m, block or shape.c, threads
    )


@per_kernels
def planes_plan(shape: ConvShape, threads: int) -> tuple[int, int]:
    """(channels a window plane, floats of the workspace: a plane and a filter panel a thread) of
    im2win in window planes a thread (im2win_conv_planes); channels 0 where it does not fit the
    memory goal or the filter is packed once."""
    work = ctypes.c_long()
    block = lib().im2win_planes_plan(
        *shape.window_args(),
        threads,
        ctypes.byref(work),
    )
    return block, work.value


def window_planes(shape: ConvShape, threads: int) -> int:
    """Channels a block of the window planes im2win builds a thread where it takes that path (0
    where it streams bands or materialises the whole window tensor): few pixels and a deep filter,
    not packed once."""
    return planes_plan(shape, threads)[0] if path_plan(shape, threads)[0] == PLANES else 0


@per_kernels
def _whole_window_floats(shape: ConvShape, threads: int) -> int:
    """Workspace of the materialised path (im2win_conv_whole): the whole window tensor (in the
    channel blocks window_block chooses), rounded up to a cache line, + the filter's workspace (the
    kernel's im2win_whole_plan)."""
    work = ctypes.c_long()
    lib().im2win_whole_plan(*shape.window_args(), threads, ctypes.byref(work), None)
    return work.value


@per_kernels
def filter_packed_once(shape: ConvShape) -> bool:
    """Whether the NHWC kernels pack the whole filter once for the call (K <= M / 4, M the output
    pixels) rather than panel by panel in every work item."""
    return bool(lib().im2win_filter_packed_once(shape.k, shape.n * shape.p * shape.q))


@per_kernels
def streams_output(shape: ConvShape, threads: int) -> bool:
    """Whether im2win writes the output with non-temporal stores (into an aligned output): each
    output tile is written once, the whole reduction one micro-kernel call (one filter panel, or
    the whole filter packed once; a window in blocks of channels takes a call a block), K is a
    multiple of the vector, and the output outgrows half a core's L2 cache (the room beside a
    thread's window bands) or, on Intel CPUs with AVX-512, a quarter of the last-level cache (a
    sixteenth for reductions of 512 steps or more)."""
    path = path_plan(shape, threads)[0]
    if path == PLANES or (path == WHOLE and window_block(shape, threads) < shape.c):
        return False
    packed = path == STREAMED or filter_packed_once(shape)  # the bands always pack it once
    macs_per_pixel = shape.c * shape.r * shape.s
    pixels = shape.n * shape.p * shape.q
    return bool(lib().im2win_streams_output(shape.k, pixels, macs_per_pixel, packed, threads))


# im2win's paths, as its phases report them
STREAMED, PLANES, WHOLE = "streamed bands", "window planes a thread", "whole window tensor"
STREAMED_SPLIT = "streamed bands, output channels split"  # STREAMED where fused_splits_channels
STREAMED_TILES = "streamed bands, {} channel blocks a tile"  # where fused_item_blocks > 1


@per_kernels
def path_plan(shape: ConvShape, threads: int) -> tuple[str, int]:
    """(the path im2win takes: STREAMED, PLANES or WHOLE, the floats of workspace it allocates
    there): see streams_windows and window_planes."""
    fused, packs_once = fused_plan(shape, threads)
    whole = _whole_window_floats(shape, threads)
    # Where both pack the filter once, the smaller workspace, and on a tie (the threads' bands
    # then hold the whole window: conv10 at batch 1, 1 x 1 layers of a few images) the streamed
    # one, which ran 1.01-1.36x the whole window tensor on every tie timed (conv10 at batch 1
    # 1.15x; 20 interleaved rounds, 2 threads, Xeon); where only the streamed plan does (in the
    # room its bands leave: M / 4 < K <= M / 2), the streamed one: conv11 at batch 4 ran 1.09x
    # that way against the whole window tensor with its filter in panels.
    if packs_once and (fused <= whole or not filter_packed_once(shape)):
        return STREAMED, fused
    planes, planes_work = planes_plan(shape, threads)
    return (PLANES, planes_work) if planes else (WHOLE, whole)


def streams_windows(shape: ConvShape, threads: int) -> bool:
    """Whether im2win streams window bands (True) or builds window planes a thread or the whole
    window tensor once (False: window_planes tells which).
    It streams when it packs the filter once (every band block would otherwise pack it again)
    and the bands need no more memory than the whole window, or the whole window's kernel would
    pack the filter panel by panel; small layers whose threads' bands would take more than the
    window (a few output rows in items of more rows a thread) share one materialised window
    tensor."""
    return path_plan(shape, threads)[0] == STREAMED


def im2win_workspace_floats(shape: ConvShape, threads: int) -> int:
    """Floats of workspace im2win allocates for `shape` on `threads` threads (the path it takes)."""
    return path_plan(shape, threads)[1]


@per_kernels
def direct_nhwc_work_floats(shape: ConvShape) -> int:
    """direct_nhwc's workspace beyond its padded NHWC input: the whole filter, packed once."""
    return lib().direct_nhwc_work_floats(shape.k, shape.c, shape.r, shape.s)
