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
    grid: tuple[int, int, int]
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


BAND_ROWS = 12  # the most filter rows (S * bk) a band kernel step stages
# the most band columns (3 * sx + min(S, 4)) a band kernel slides over in registers within 128
# registers a thread (2 blocks an SM): conv1-2 (stride 4, 16 columns) spilled 16-84 B on sm_80 and
# sm_90 there, and compile for one block an SM instead (152-168 registers, no spill)
BAND_SLIDE_FLOATS = 12


def band_depth(bk: int, s: int) -> int:
    """The band kernel's step depth on a filter S wide: bk values of r*C + c, or where S * bk
    filter rows would pass BAND_ROWS the largest power of 2 that keeps within it (at least 1):
    S = 3: 4 of bk = 8; conv5 (S = 5): 2; conv1-conv4 (S = 11, 7): 1."""
    if bk * s <= BAND_ROWS:
        return bk
    depth = 1
    while depth * 2 * s <= BAND_ROWS and depth * 2 <= bk:
        depth *= 2
    return depth


def contiguous_strides(shape: ConvShape, channels_last: bool = False) -> tuple[int, int, int, int]:
    """The (n, c, h, w) strides of a contiguous input of `shape`: NCHW, or `channels_last`."""
    c, h, w = shape.c, shape.h, shape.w
    return (h * w * c, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)


def input_extent(shape: ConvShape, strides: tuple[int, int, int, int] | None) -> int:
    """Elements from an input's first to its last, through `strides` (None: contiguous)."""
    strides = contiguous_strides(shape) if strides is None else strides
    sizes = shape.input_shape()
    return 1 + sum((n - 1) * abs(st) for n, st in zip(sizes, strides, strict=True))


def for_shape(
    config: TileConfig, shape: ConvShape, strides: tuple[int, int, int, int] | None = None
) -> TileConfig:
    """`config` made for `shape`: a band kernel for its filter width and column stride (and step
    depth, band_depth; one block an SM past BAND_SLIDE_FLOATS), the block tile fitted to its output
    channels where config.fit_k asks (TileConfig.fitted), and 64-bit offsets when some buffer has
    2**31 elements or more (a fused kernel's input read through `strides`: None, contiguous)."""
    if config.band:
        config = config.replace(
            band_s=shape.s, band_sx=shape.stride[1], bk=band_depth(config.bk, shape.s)
        )
        if 3 * shape.stride[1] + min(shape.s, 4) > BAND_SLIDE_FLOATS:
            config = config.replace(min_blocks=1)
    config = config.fitted(shape.k)
    largest = max(
        input_extent(shape, strides) if config.fused else window_nhwc_elems(shape),  # A's source
        shape.n * shape.p * shape.q * shape.k,  # output
        filter_elems(shape),  # filter
    )
    return config if config.wide_index or largest <= INT32_MAX else config.replace(wide_index=True)


def _blocks(n: int, per: int) -> int:
    return -(-n // per)


WINDOW_FLOATS = 8192  # shared floats of a window-transform block, padding included (WIN_FLOATS)
WINDOW_THREADS = 256  # threads of a window-transform block (WIN_THREADS)
WINDOW_MIN_CHANNELS = 32  # a tile's channels: whole 128-byte lines of Iw a store ...
WINDOW_MIN_COLUMNS = 8  # ... and columns: whole 32-byte sectors of an NCHW row a load


def _pow2_at_least(n: int) -> int:
    return 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class WindowTile:
    """One im2win_window block's tile: TR window rows x TC channels x TW window columns, value
    (r, c, w) at w * w_pitch + (r*TC + c) * rc_pitch of shared memory."""

    tr: int
    tc: int
    tw: int
    w_pitch: int
    rc_pitch: int


def _tile_floats(tr: int, tc: int, tw: int) -> int:
    """Shared floats a tile takes in either layout (rc rows of TW + 1, or columns of TR*TC + 1)."""
    return tr * tc * tw + max(tr * tc, tw)


def window_tile(shape: ConvShape, c_inner: bool = False) -> WindowTile:
    """im2win_window's tile for `shape`: first at least 32 channels and 8 columns (or all there
    are), then every window row that fits WINDOW_FLOATS, then more along the input's innermost axis
    (columns for NCHW, so that its short rows are read whole; channels for channels_last) and then
    along the other, up to the powers of 2 above C and Wu and WINDOW_THREADS: NCHW conv1 11 x 4 x
    128, conv8 3 x 32 x 64, conv12 3 x 256 x 8. Shared memory as rc rows of TW + 1 floats (lanes
    along w or along c in distinct banks), or where a tile has fewer channels than a warp's lanes,
    whose stores then span several (w, r), as columns of TR*TC + 1."""
    c2 = min(_pow2_at_least(shape.c), WINDOW_THREADS)
    w2 = min(_pow2_at_least(shape.window_width), WINDOW_THREADS)
    tc, tw = min(c2, WINDOW_MIN_CHANNELS), min(w2, WINDOW_MIN_COLUMNS)
    tr = min(shape.r, WINDOW_FLOATS // (tc * (tw + 1)))
    grow = [("tc", c2), ("tw", w2)]
    for axis, limit in grow if c_inner else grow[::-1]:
        while (tc if axis == "tc" else tw) < limit:
            bigger = (tr, tc * 2, tw) if axis == "tc" else (tr, tc, tw * 2)
            if _tile_floats(*bigger) > WINDOW_FLOATS:
                break
            tr, tc, tw = bigger
    if tc < WINDOW_MIN_CHANNELS:
        return WindowTile(tr, tc, tw, tr * tc + 1, 1)
    return WindowTile(tr, tc, tw, 1, tw + 1)


def window_c_inner(shape: ConvShape, strides: tuple[int, int, int, int]) -> bool:
    """Whether a window transform reads the input along c (channels_last strides), not along w."""
    return strides[1] == 1 and shape.c > 1


def _window_args(shape: ConvShape, strides: tuple[int, int, int, int]) -> tuple:
    """The arguments both window-transform kernels take first: x's strides and the geometry."""
    return (
        *strides,
        shape.c,
        shape.h,
        shape.w,
        shape.r,
        shape.stride[0],
        *shape.padding,
        shape.p,
        shape.window_width,
    )


def window_launch(shape: ConvShape, strides: tuple[int, int, int, int]) -> Launch:
    """im2win_window: one block per output row (n, p), tile of TW window columns and tile of TR
    window rows x TC channels (window_tile), read along the input's innermost axis (c_inner:
    channels_last strides)."""
    c_inner = window_c_inner(shape, strides)
    tile = window_tile(shape, c_inner)
    rows = shape.n * shape.p
    if rows > INT32_MAX:
        raise ValueError(
            f"{rows} output rows (N*P) pass the grid's 2**31 - 1 blocks: split the batch"
        )
    tiles_c = _blocks(shape.c, tile.tc)
    args = (
        *_window_args(shape, strides),
        tile.tc.bit_length() - 1,
        tile.tw.bit_length() - 1,
        tile.tr,
        tiles_c,
        tile.w_pitch,
        tile.rc_pitch,
        int(c_inner),
    )
    grid = (rows, _blocks(shape.window_width, tile.tw), tiles_c * _blocks(shape.r, tile.tr))
    return Launch("im2win_window", grid, WINDOW_THREADS, args, "llll" + "i" * 16)


WINDOW_ROWS_TILE_LOG2 = 10  # im2win_window_rows: floats of a tile (its WIN_ROWS_LOG2)


def window_rows_launch(shape: ConvShape, strides: tuple[int, int, int, int]) -> Launch:
    """im2win_window_rows, the window transform up to c72bc28 (timed beside window_launch's): one
    block per window row (n, p, r) and tile of TW window columns x TC channels (TC the least power
    of 2 >= C, at most 32; TC * TW = 2**WINDOW_ROWS_TILE_LOG2)."""
    tc_log2 = min(5, (shape.c - 1).bit_length())  # C >= 1
    rows = shape.n * shape.p * shape.r
    if rows > INT32_MAX:
        raise ValueError(f"{rows} window rows (N*P*R) pass the grid's 2**31 - 1 blocks")
    args = (*_window_args(shape, strides), tc_log2, int(window_c_inner(shape, strides)))
    tw = 2 ** (WINDOW_ROWS_TILE_LOG2 - tc_log2)
    grid = (rows, _blocks(shape.window_width, tw), _blocks(shape.c, 2**tc_log2))
    return Launch("im2win_window_rows", grid, WINDOW_THREADS, args, "llll" + "i" * 11)


def filter_launch(shape: ConvShape) -> Launch:
    """im2win_filter: one thread per element of Fw[T][K]."""
    total = filter_elems(shape)
    args = (shape.k, shape.c, shape.r, shape.s, total)
    return Launch(
        "im2win_filter", (_blocks(total, ELEMENTWISE_BLOCK), 1, 1), ELEMENTWISE_BLOCK, args, "iiiil"
    )


MAX_SLICES = 8
MIN_SLICE_STEPS = 32  # BK-deep steps a slice keeps, so its prologue and partial sums stay cheap
SPLIT_GAIN = 1.1  # a split must fill the GPU's waves this much better to pay for its partial sums


def reduction_length(shape: ConvShape, config: TileConfig) -> int:
    """What the kernel's steps run over: t = (s, r, c), or for a band kernel r*C + c (each of its
    steps takes every filter column)."""
    return shape.r * shape.c * (1 if config.band else shape.s)


def reduction_steps(shape: ConvShape, config: TileConfig) -> int:
    """BK-deep steps of the reduction."""
    return _blocks(reduction_length(shape, config), config.bk)


def pixel_rows(shape: ConvShape, config: TileConfig) -> int:
    """Tile rows of the output pixels: N*P*Q, or for a band kernel N*P*ceil(Q / 4) quads of 4."""
    return shape.n * shape.p * (_blocks(shape.q, 4) * 4 if config.band else shape.q)


def _wave_fill(tiles: int, capacity: int) -> float:
    """Busy fraction of the block slots over the waves `tiles` blocks take."""
    return tiles / (_blocks(tiles, capacity) * capacity)


def split_slices(shape: ConvShape, config: TileConfig, sms: int | None) -> int:
    """Slices of the reduction (split-K) for `shape`: config.split_k when it is set; else, on a GPU
    of `sms` multiprocessors holding config.min_blocks blocks each, 1 when the tiles make two waves
    or more, otherwise the count of 1..MAX_SLICES whose blocks fill the waves best, by a margin of
    SPLIT_GAIN over one fewer split, each slice keeping at least MIN_SLICE_STEPS steps (conv12 at
    batch 128 has 100 tiles of 128 x 128 for 264 slots on an H100). Never more slices than
    BK-deep steps; 1 without a device."""
    steps = reduction_steps(shape, config)
    if config.split_k:
        return max(1, min(config.split_k, steps))
    if not sms:
        return 1
    tiles = _blocks(pixel_rows(shape, config), config.bm) * _blocks(shape.k, config.bn)
    capacity = sms * config.min_blocks
    if tiles >= 2 * capacity:
        return 1
    best, best_fill = 1, _wave_fill(tiles, capacity)
    for slices in range(2, MAX_SLICES + 1):
        if steps < slices * MIN_SLICE_STEPS:
            break
        fill = _wave_fill(tiles * slices, capacity)
        if fill > best_fill * SPLIT_GAIN:
            best, best_fill = slices, fill
    return best


def slice_steps(shape: ConvShape, config: TileConfig, slices: int) -> int:
    """Reduction steps per slice, a multiple of 2 * BK (the kernel picks its double buffer from the
    step's parity); the last slice may be shorter, and fewer slices than asked may be needed."""
    steps = reduction_steps(shape, config)
    return _blocks(_blocks(steps, slices), 2) * 2 * config.bk


def slices_used(shape: ConvShape, config: TileConfig, slices: int) -> int:
    """The slices that hold reduction steps when `slices` are asked for (grid z of im2win_conv)."""
    return _blocks(reduction_length(shape, config), slice_steps(shape, config, slices))


def partial_elems(shape: ConvShape, config: TileConfig, slices: int) -> int:
    """Floats of split-K's partial sums: one output-sized buffer per slice after the first."""
    return (slices_used(shape, config, slices) - 1) * shape.n * shape.p * shape.q * shape.k


# im2win_conv's scalars after its five buffers, in the kernel's order (IM2WIN_CONV_ENTRY)
CONV_SCALARS = (
    *("has_bias", "N", "C", "K", "R", "S", "sx", "P", "Q", "Wu", "vec_a", "vec_b", "t_split"),
    *("xn", "xc", "xh", "xw", "H", "W", "sy", "py", "px"),
)


def fused_vec_a(shape: ConvShape, strides: tuple[int, int, int, int], aligned: bool) -> int:
    """A fused kernel's vec_a: 2 where its runs of 4 values are one float4 of x (C % 4 == 0, x
    channels_last with every stride a multiple of 4 and its data 16-byte `aligned`), 1 where they
    are 4 channels of one (r, s) (C % 4 == 0), else 0 (each value's place its own)."""
    if shape.c % 4:
        return 0
    xn, xc, xh, xw = strides
    return 2 if aligned and xc == 1 and xn % 4 == 0 and xh % 4 == 0 and xw % 4 == 0 else 1


def conv_launch(
    shape: ConvShape,
    config: TileConfig,
    has_bias: bool,
    slices: int = 1,
    strides: tuple[int, int, int, int] | None = None,
    aligned: bool = True,
) -> Launch:
    """im2win_conv: one block per BM x BN output tile and slice of the reduction; float4 loads
    where addresses align.

    A rows start at multiples of R*C and step by 4 only when C % 4 == 0 (a band kernel's runs of
    r*C + c: when R*C % 4 == 0); B rows are K long. A fused kernel reads x through `strides`
    (None: contiguous NCHW), whose data is 16-byte `aligned` or not (fused_vec_a); the others take
    them too, unread.
    """
    if config.band and (config.band_s, config.band_sx) != (shape.s, shape.stride[1]):
        raise ValueError(
            f"a band kernel compiled for S = {config.band_s}, stride {config.band_sx} cannot run "
            f"S = {shape.s}, stride {shape.stride[1]}: make it with launch.for_shape"
        )
    strides = contiguous_strides(shape) if strides is None else tuple(strides)
    if config.fused:
        vec_a = fused_vec_a(shape, strides, aligned)
    else:
        vec_a = int((shape.r if config.band else 1) * shape.c % 4 == 0)
    vec_b = int(shape.k % 4 == 0)
    t_split = slice_steps(shape, config, slices)
    args = (
        int(has_bias),
        *shape.window_args(),
        shape.window_width,
        vec_a,
        vec_b,
        t_split,
        *strides,
        shape.h,
        shape.w,
        shape.stride[0],
        *shape.padding,
    )
    grid = (
        _blocks(pixel_rows(shape, config), config.bm),
        _blocks(shape.k, config.bn),
        slices_used(shape, config, slices),
    )
    types = "".join("l" if name in ("xn", "xc", "xh", "xw") else "i" for name in CONV_SCALARS)
    return Launch("im2win_conv", grid, config.threads, args, types)


def reduce_launch(shape: ConvShape, config: TileConfig, slices: int) -> Launch | None:
    """splitk_reduce: adds the partial sums of slices 1.. into the output (None: nothing to add)."""
    total = shape.n * shape.p * shape.q * shape.k
    extra = slices_used(shape, config, slices) - 1
    if extra == 0:
        return None
    return Launch(
        "splitk_reduce",
        (_blocks(total, ELEMENTWISE_BLOCK), 1, 1),
        ELEMENTWISE_BLOCK,
        (extra, total),
        "il",
    )


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
        (_blocks(total, ELEMENTWISE_BLOCK), 1, 1),
        ELEMENTWISE_BLOCK,
        args,
        "i" + "llll" + "i" * 13,
    )
