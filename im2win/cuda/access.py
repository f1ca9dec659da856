"""A model of im2win_conv's memory accesses, from the kernel's own index math, for one block: the
shared-memory wavefronts of every load and store (bank conflicts) and the 32-byte global sectors
every request touches. It needs no GPU, so CI holds the kernel to conflict-free shared access.

How a warp request is served (wavefronts, sectors) and the kernel's index math are in
im2win/cuda/access_sites.py.

`legacy=True` models the kernel as it was at 1cf3772 (thread (ty, tx) owning rows ty*TM.. and
columns tx*TN.., As rows unpadded, scalar output stores), the one Nsight Compute profiled on an H100
(shared loads 6-way, 44% of their wavefronts excessive; stores 4-way, 75%; output stores using 4
of 32 bytes per sector), so the model can be checked against those figures.

shared_pipe_demand sets a step's shared wavefronts against the clocks its FFMAs take at the FMA
peak: the shared pipe's share of the FMA pipe's work, and so the FMA ceiling it leaves.

The window-band kernel's sites are modelled in im2win/cuda/access_band.py.
"""

from __future__ import annotations

from im2win.cuda.access_band import band_model
from im2win.cuda.access_sites import (
    WARP,
    KernelIndex,
    Site,
    global_sectors,
    shared_wavefronts,
    site,
)
from im2win.cuda.config import TileConfig
from im2win.cuda.launch import contiguous_strides, for_shape
from im2win.cuda.occupancy import ARCH_LIMITS, SHARED_WAVEFRONTS_PER_CLOCK
from im2win.shapes import ConvShape

__all__ = [
    "KernelIndex",
    "Site",
    "global_sectors",
    "input_offset",
    "model",
    "shared_pipe_demand",
    "shared_wavefronts",
    "summary",
    "window_offset",
]


def window_offset(shape: ConvShape, m: int, t: int) -> int:
    """Where A[m][t] is in the window tensor Iw: pixel m's window start (window_base) + t."""
    n, rest = divmod(m, shape.p * shape.q)
    p, q = divmod(rest, shape.q)
    return ((n * shape.p + p) * shape.window_width + q * shape.stride[1]) * shape.r * shape.c + t


def input_offset(shape: ConvShape, m: int, t: int, channels_last: bool = False) -> int | None:
    """Where a fused kernel reads A[m][t] in a contiguous x (NCHW or channels_last), t = (s, r, c):
    x[n][c][p*sy + r - py][q*sx + s - px]; None in the zero padding."""
    n, rest = divmod(m, shape.p * shape.q)
    p, q = divmod(rest, shape.q)
    s, rc = divmod(t, shape.r * shape.c)
    r, c = divmod(rc, shape.c)
    h = p * shape.stride[0] + r - shape.padding[0]
    w = q * shape.stride[1] + s - shape.padding[1]
    if not (0 <= h < shape.h and 0 <= w < shape.w):
        return None
    sn, sc, sh, sw = contiguous_strides(shape, channels_last)
    return n * sn + c * sc + h * sh + w * sw


def model(
    config: TileConfig, shape: ConvShape, legacy: bool = False, channels_last: bool = False
) -> list[Site]:
    """Every access site of im2win_conv for `config`, over the warps of block (0, 0) and its
    first BK step, on `shape` (for the global addresses: window starts, K; a fused kernel's A
    values in a contiguous x, NCHW or `channels_last`). Models the shared-memory path
    (config.smem)."""
    if not config.smem:
        raise ValueError("the access model covers the shared-memory path (smem=True) only")
    config = for_shape(config, shape)  # the kernel the launch runs: fitted, a band for the shape
    if config.band:
        return band_model(config, shape)
    k = KernelIndex(config, legacy)
    c, threads = config, k.threads
    warps = [range(w * WARP, (w + 1) * WARP) for w in range(threads // WARP)]
    # float4 global loads: compiled in (VEC_A/VEC_B) and allowed by the launch (vec_a: C % 4 == 0,
    # and for a fused kernel x channels_last; vec_b: K % 4 == 0, im2win/cuda/launch.py)
    vec_a = c.vec_load and k.a_run % 4 == 0 and shape.c % 4 == 0 and (channels_last or not c.fused)
    vec_b = c.vec_load and k.b_run % 4 == 0 and shape.k % 4 == 0
    out_vec = not legacy and k.tns == 4 and shape.k % 4 == 0

    def a_address(m: int, t: int) -> int | None:  # A[m][t]'s bytes: in Iw, or in x (fused)
        if not c.fused:
            return window_offset(shape, m, t) * 4
        at = input_offset(shape, m, t, channels_last)
        return None if at is None else at * 4

    sites = []

    def add(name, space, kind, width, lanes_per_request):
        sites.append(site(name, space, kind, width, lanes_per_request))

    # shared stores of one step: A transposed (scalar), B (float4 when vectorised)
    add(
        "A tile store (STS)",
        "shared",
        "store",
        4,
        [
            [((k.a_runs(t)[r][1] + j) * k.as_row + k.a_runs(t)[r][0]) * 4 for t in warp]
            for warp in warps
            for r in range(k.a_loads // k.a_run)
            for j in range(k.a_run)
        ],
    )
    b_width = 4  # as STORE_B: float4 when compiled with VEC_B, else float2 runs, else scalar
    if not legacy:
        b_width = 16 if c.vec_load and k.b_run % 4 == 0 else 8 if k.b_run % 2 == 0 else 4
    add(
        f"B tile store (STS{'' if b_width == 4 else f'.{8 * b_width}'})",
        "shared",
        "store",
        b_width,
        [
            [(k.b_runs(t)[r][0] * c.bn + k.b_runs(t)[r][1] + j) * 4 for t in warp]
            for warp in warps
            for r in range(k.b_loads // k.b_run)
            for j in range(0, k.b_run, b_width // 4)
        ],
    )
    # shared loads of a step: a (TM rows) and b (TN columns), a float4 per 4 consecutive; the
    # row offset kk * row length is the same for every lane, so it changes no bank conflict
    for name, idx, n in (("A", k.rows, c.tm), ("B", k.cols, c.tn)):
        width = 16 if (k.tms if name == "A" else k.tns) == 4 else 4
        per = width // 4
        add(
            f"{name} fragment load (LDS{'.128' if width == 16 else ''})",
            "shared",
            "load",
            width,
            [
                [idx(t)[v] * 4 for t in warp]
                for kk in range(c.bk)
                for warp in warps
                for v in range(0, n, per)
            ],
        )
    # global loads of one step
    a_width = 16 if vec_a else 4
    add(
        f"A {'input' if c.fused else 'window'} load (LDG{'.128' if a_width == 16 else ''})",
        "global",
        "load",
        a_width,
        [
            [a_address(k.a_runs(t)[r][0], k.a_runs(t)[r][1] + j) for t in warp]
            for warp in warps
            for r in range(k.a_loads // k.a_run)
            for j in range(0, k.a_run, a_width // 4)
        ],
    )
    add(
        f"B filter load (LDG{'.128' if vec_b else ''})",
        "global",
        "load",
        16 if vec_b else 4,
        [
            [(k.b_runs(t)[r][0] * shape.k + k.b_runs(t)[r][1] + j) * 4 for t in warp]
            for warp in warps
            for r in range(k.b_loads // k.b_run)
            for j in range(0, k.b_run, 4 if vec_b else 1)
        ],
    )
    # output stores of the block
    o_width = 16 if out_vec else 4
    add(
        f"output store (STG{'.128' if o_width == 16 else ''})",
        "global",
        "store",
        o_width,
        [
            [(k.rows(t)[i] * shape.k + k.cols(t)[j]) * 4 for t in warp]
            for warp in warps
            for i in range(c.tm)
            for j in range(0, c.tn, o_width // 4)
        ],
    )
    return sites


def shared_pipe_demand(
    config: TileConfig,
    shape: ConvShape,
    arch: str = "sm_90",
    legacy: bool = False,
    sites: list[Site] | None = None,
) -> float:
    """Clocks the shared-memory pipe needs for a step of block (0, 0) (its wavefronts, loads and
    stores) per clock its FFMAs take at `arch`'s FMA peak (each thread's TM x TN multiply-adds for
    each of BK reduction values; the band kernel's for each of its S filter columns too). Above
    1 the shared pipe, not the FMA pipe, bounds the kernel: at 1 / this of the FMA peak at best.
    `sites`: model(config, shape, legacy), where the caller has it already."""
    config = for_shape(config, shape)
    sites = model(config, shape, legacy) if sites is None else sites
    wavefronts = sum(s.wavefronts for s in sites if s.space == "shared")
    taps = config.band_s if config.band else 1
    ffma = config.threads // WARP * config.bk * taps * config.tm * config.tn
    ffma_clocks = ffma / (ARCH_LIMITS[arch].fp32_lanes // WARP)
    return wavefronts / SHARED_WAVEFRONTS_PER_CLOCK / ffma_clocks


def summary(sites: list[Site]) -> dict:
    """Shared loads and stores: wavefronts per request and the share of excess wavefronts (as
    Nsight Compute reports them); global: useful bytes per sector, loads and stores."""
    out = {}
    for space, kind in (("shared", "load"), ("shared", "store")):
        group = [s for s in sites if s.space == space and s.kind == kind]
        wf, ideal, req = (
            sum(getattr(s, a) for s in group) for a in ("wavefronts", "ideal", "requests")
        )
        out[f"{space}_{kind}_wavefronts_per_request"] = wf / req
        out[f"{space}_{kind}_excess"] = (wf - ideal) / wf
    for kind in ("load", "store"):
        group = [s for s in sites if s.space == "global" and s.kind == kind]
        out[f"global_{kind}_bytes_per_sector"] = sum(s.bytes_used for s in group) / sum(
            s.sectors for s in group
        )
    return out
