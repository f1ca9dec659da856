"""A model of im2win_conv's memory accesses, from the kernel's own index math, for one block: the
shared-memory wavefronts of every load and store (bank conflicts) and the 32-byte global sectors
every request touches. It needs no GPU, so CI holds the kernel to conflict-free shared access.

Shared memory has 32 banks of 4 bytes. A warp's request is served in phases (all 32 lanes for
32-bit accesses, 16 for 64-bit, 8 for 128-bit); a phase takes as many wavefronts as the most
distinct 4-byte words any one bank must deliver (lanes reading the same word share it). The ideal
is one wavefront per 32 distinct words of a phase. Global requests are served in 32-byte sectors.

`legacy=True` models the kernel as it was at 1cf3772 (thread (ty, tx) owning rows ty*TM.. and
columns tx*TN.., As rows unpadded, scalar output stores), the one Nsight Compute profiled on an H100
(shared loads 6-way, 44% of their wavefronts excessive; stores 4-way, 75%; output stores using 4
of 32 bytes per sector), so the model can be checked against those figures.

shared_pipe_demand sets a step's shared wavefronts against the clocks its FFMAs take at the FMA
peak: the shared pipe's share of the FMA pipe's work, and so the FMA ceiling it leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from im2win.cuda.config import TileConfig
from im2win.cuda.launch import for_shape
from im2win.cuda.occupancy import ARCH_LIMITS, SHARED_WAVEFRONTS_PER_CLOCK
from im2win.shapes import ConvShape

WARP, BANKS, SECTOR = 32, 32, 32


@dataclass(frozen=True)
class Site:
    """One access instruction of the kernel as every warp of a block issues it."""

    name: str
    space: str  # "shared" or "global"
    kind: str  # "load" or "store"
    width: int  # bytes per lane
    requests: int  # warp-level requests per block and BK step (or per block, for the output)
    wavefronts: int  # shared: summed over those requests
    ideal: int
    sectors: int = 0  # global: summed over the requests
    bytes_used: int = 0

    @property
    def ways(self) -> float:
        """Wavefronts per ideal wavefront: 1.0 is conflict-free."""
        return self.wavefronts / self.ideal if self.ideal else 1.0

    @property
    def sector_use(self) -> float | None:
        """Useful bytes per 32-byte sector fetched or written (32 at best)."""
        return self.bytes_used / self.sectors if self.sectors else None


def shared_wavefronts(byte_addresses: list[int | None], width: int) -> tuple[int, int]:
    """(wavefronts, ideal) of one warp request: lane i accesses `width` bytes at byte_addresses[i]
    (None: an inactive lane)."""
    per_phase = WARP * 4 // width if width > 4 else WARP
    total = ideal = 0
    for start in range(0, WARP, per_phase):
        words = {
            a // 4 + w
            for a in byte_addresses[start : start + per_phase]
            if a is not None
            for w in range(width // 4)
        }
        if not words:
            continue
        per_bank: dict[int, int] = {}
        for word in words:
            per_bank[word % BANKS] = per_bank.get(word % BANKS, 0) + 1
        total += max(per_bank.values())
        ideal += math.ceil(len(words) / BANKS)
    return total, ideal


def global_sectors(byte_addresses: list[int | None], width: int) -> tuple[int, int]:
    """(sectors, useful bytes) of one warp request."""
    spans = [(a, a + width) for a in byte_addresses if a is not None]
    sectors = {s for lo, hi in spans for s in range(lo // SECTOR, (hi - 1) // SECTOR + 1)}
    used = len({b for lo, hi in spans for b in range(lo, hi, 4)}) * 4
    return len(sectors), used


def _site(name: str, space: str, kind: str, width: int, lanes_per_request: list) -> Site:
    """A Site from the byte addresses of each warp request's lanes."""
    wf = ideal = sectors = used = 0
    for addresses in lanes_per_request:
        if space == "shared":
            w, i = shared_wavefronts(addresses, width)
            wf, ideal = wf + w, ideal + i
        else:
            s, u = global_sectors(addresses, width)
            sectors, used = sectors + s, used + u
    return Site(name, space, kind, width, len(lanes_per_request), wf, ideal, sectors, used)


class _Kernel:
    """The kernel's index math for one configuration (the functions of im2win.cu, in Python)."""

    def __init__(self, config: TileConfig, legacy: bool):
        self.c, self.legacy = config, legacy
        self.threads = config.threads
        self.as_row = config.bm if legacy else config.bm + 4
        self.a_loads, self.b_loads = config.a_loads, config.b_loads
        self.a_run = config.a_loads if legacy else config.row_run
        self.tms, self.tns = min(config.tm, 4), min(config.tn, 4)
        self.ly, self.lx = config.lanes

    def rows(self, tid: int) -> list[int]:
        c = self.c
        if self.legacy:
            ty = tid // (c.bn // c.tn)
            return [ty * c.tm + i for i in range(c.tm)]
        warp, lane = divmod(tid, WARP)
        wm0 = (warp // (c.bn // self.c.warp_tile[1])) * c.warp_tile[0]
        ly, msub = lane // self.lx, c.tm // self.tms
        return [
            wm0 + (i // self.tms) * (c.warp_tile[0] // msub) + ly * self.tms + i % self.tms
            for i in range(c.tm)
        ]

    def cols(self, tid: int) -> list[int]:
        c = self.c
        if self.legacy:
            tx = tid % (c.bn // c.tn)
            return [tx * c.tn + j for j in range(c.tn)]
        warp, lane = divmod(tid, WARP)
        wn0 = (warp % (c.bn // c.warp_tile[1])) * c.warp_tile[1]
        lx, nsub = lane % self.lx, c.tn // self.tns
        return [
            wn0 + (j // self.tns) * (c.warp_tile[1] // nsub) + lx * self.tns + j % self.tns
            for j in range(c.tn)
        ]

    def a_runs(self, tid: int) -> list[tuple[int, int]]:
        """(row, first t) of each run of this thread's A loads (ROW_RUN long; the legacy kernel:
        one run of all of them)."""
        if self.legacy:
            e = tid * self.a_loads
            return [(e // self.c.bk, e % self.c.bk)]
        per_row = self.c.bk // self.c.row_run  # RUNS_PER_ROW
        apart = self.threads // per_row  # A_ROWS_APART
        return [
            (tid // per_row + r * apart, tid % per_row * self.c.row_run)
            for r in range(self.a_loads // self.c.row_run)
        ]

    def b_slot(self, tid: int) -> tuple[int, int]:  # (t, first channel) of its B loads
        e = tid * self.b_loads
        return e // self.c.bn, e % self.c.bn


def model(config: TileConfig, shape: ConvShape, legacy: bool = False) -> list[Site]:
    """Every access site of im2win_conv for `config`, over the warps of block (0, 0) and its
    first BK step, on `shape` (for the global addresses: window starts, K). Models the
    shared-memory path (config.smem)."""
    if not config.smem:
        raise ValueError("the access model covers the shared-memory path (smem=True) only")
    config = for_shape(config, shape)  # the kernel the launch runs: fitted, a band for the shape
    if config.band:
        return _band_model(config, shape)
    k = _Kernel(config, legacy)
    c, threads = config, k.threads
    warps = [range(w * WARP, (w + 1) * WARP) for w in range(threads // WARP)]
    rc, wu = shape.r * shape.c, shape.window_width
    # float4 global loads: compiled in (VEC_A/VEC_B) and allowed by the launch (vec_a: C % 4 == 0,
    # vec_b: K % 4 == 0, im2win/cuda/launch.py)
    vec_a = c.vec_load and k.a_run % 4 == 0 and shape.c % 4 == 0
    vec_b = c.vec_load and k.b_loads % 4 == 0 and shape.k % 4 == 0
    out_vec = not legacy and k.tns == 4 and shape.k % 4 == 0

    def base(m: int) -> int:  # window_base(): start of pixel m's window in Iw
        n, rest = divmod(m, shape.p * shape.q)
        p, q = divmod(rest, shape.q)
        return ((n * shape.p + p) * wu + q * shape.stride[1]) * rc

    sites = []

    def add(name, space, kind, width, lanes_per_request):
        sites.append(_site(name, space, kind, width, lanes_per_request))

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
        b_width = 16 if c.vec_load and k.b_loads % 4 == 0 else 8 if k.b_loads % 2 == 0 else 4
    add(
        f"B tile store (STS{'' if b_width == 4 else f'.{8 * b_width}'})",
        "shared",
        "store",
        b_width,
        [
            [(k.b_slot(t)[0] * c.bn + k.b_slot(t)[1] + j) * 4 for t in warp]
            for warp in warps
            for j in range(0, k.b_loads, b_width // 4)
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
        f"A window load (LDG{'.128' if a_width == 16 else ''})",
        "global",
        "load",
        a_width,
        [
            [(base(k.a_runs(t)[r][0]) + k.a_runs(t)[r][1] + j) * 4 for t in warp]
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
            [(k.b_slot(t)[0] * shape.k + k.b_slot(t)[1] + j) * 4 for t in warp]
            for warp in warps
            for j in range(0, k.b_loads, 4 if vec_b else 1)
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


def _band_model(config: TileConfig, shape: ConvShape) -> list[Site]:
    """The sites of the band kernel (kernels/im2win_band.cu), the same way: block (0, 0), its first
    step (bk values of r*C + c, every filter column)."""
    k = _Kernel(config, legacy=False)
    c, threads = config, config.threads
    warps = [range(w * WARP, (w + 1) * WARP) for w in range(threads // WARP)]
    lp, s_, sx = c.band_cols, shape.s, shape.stride[1]
    ab_row = c.band_a_row
    a_run = min(c.bk, 4)
    a_runs_all, b_runs_all = c.bm // 4 * lp * (c.bk // a_run), s_ * c.bk * (c.bn // 4)
    rc, wu, q4 = shape.r * shape.c, shape.window_width, -(-shape.q // 4)
    vec_a = c.vec_load and a_run == 4 and rc % 4 == 0
    vec_b = c.vec_load and shape.k % 4 == 0
    ly_of = [lane // k.lx for lane in range(WARP)]

    def runs(total: int) -> list[list[int | None]]:  # each thread's run ids, per warp request
        return [
            [t + i * threads if t + i * threads < total else None for t in warp]
            for warp in warps
            for i in range(-(-total // threads))
        ]

    def band_base(col: int) -> int | None:  # band_base() of im2win_band.cu
        quad = col // lp
        w = quad % q4 * 4 * sx + col % lp
        inside = quad < shape.n * shape.p * q4 and w < wu and col % lp < 3 * sx + s_
        return (quad // q4 * wu + w) * rc if inside else None

    def col_t(run: int) -> tuple[int, int]:  # (band column, first rc) of an A run
        return run // (c.bk // a_run), run % (c.bk // a_run) * a_run

    def b_addr(run: int) -> int:  # (Bs row, first channel) of a B run, as a float offset
        return run // (c.bn // 4) * c.bn + run % (c.bn // 4) * 4

    def a_store(r: int | None, j: int) -> int | None:
        return None if r is None else ((col_t(r)[1] + j) * ab_row + col_t(r)[0]) * 4

    a_requests = runs(a_runs_all)
    b_requests = runs(b_runs_all)
    sites = [
        _site(
            "A band store (STS)",
            "shared",
            "store",
            4,
            [[a_store(r, j) for r in req] for req in a_requests for j in range(a_run)],
        ),
        _site(
            "B tile store (STS.128)",
            "shared",
            "store",
            16,
            [[None if r is None else b_addr(r) * 4 for r in req] for req in b_requests],
        ),
    ]
    slide = min(s_, 4)
    band_loads = []
    for s0 in range(0, s_, slide):
        vl = -(-(3 * sx + min(slide, s_ - s0)) // 4) * 4
        for u in range(c.tm // 4):
            for e in range(0, vl, 4):
                band_loads.append(
                    lambda t, u=u, e=e, s0=s0: (
                        (
                            (t // WARP // (c.bn // c.warp_tile[1]) * c.warp_tile[0] // 4)
                            + u * k.ly
                            + ly_of[t % WARP]
                        )
                        * lp
                        + s0
                        + e
                    )
                )
    sites.append(
        _site(
            "A band load (LDS.128)",
            "shared",
            "load",
            16,
            [[f(t) * 4 for t in warp] for _ in range(c.bk) for warp in warps for f in band_loads],
        )
    )
    sites.append(
        _site(
            "B fragment load (LDS.128)",
            "shared",
            "load",
            16,
            [
                [k.cols(t)[v] * 4 for t in warp]
                for _ in range(c.bk * s_)
                for warp in warps
                for v in range(0, c.tn, 4)
            ],
        )
    )

    def a_global(r: int | None, j: int) -> int | None:
        if r is None:
            return None
        col, t = col_t(r)
        base = band_base(col)
        return None if base is None or t + j >= rc else (base + t + j) * 4

    def b_global(r: int | None, j: int) -> int | None:
        if r is None:
            return None
        row, col = divmod(b_addr(r), c.bn)
        kk = col + j
        return (
            None
            if kk >= shape.k or row % c.bk >= rc
            else (((row // c.bk) * rc + row % c.bk) * shape.k + kk) * 4
        )

    def loads(name: str, vec: bool, run: int, requests: list, address) -> Site:
        """A global load site: each request's runs of `run` floats, as float4s where `vec`."""
        width = 16 if vec else 4
        lanes = [
            [address(r, j) for r in req] for req in requests for j in range(0, run, width // 4)
        ]
        return _site(f"{name} (LDG{'.128' if vec else ''})", "global", "load", width, lanes)

    sites.append(loads("A band load", vec_a, a_run, a_requests, a_global))
    sites.append(loads("B filter load", vec_b, 4, b_requests, b_global))

    def pixel(row: int) -> int | None:  # band_pixel() of im2win_band.cu
        quad, i = divmod(row, 4)
        q = quad % q4 * 4 + i
        return quad // q4 * shape.q + q if quad < shape.n * shape.p * q4 and q < shape.q else None

    def out_addr(t: int, i: int, j: int) -> int | None:
        m = pixel(k.rows(t)[i])
        return None if m is None else (m * shape.k + k.cols(t)[j]) * 4

    o_width = 16 if shape.k % 4 == 0 else 4
    sites.append(
        _site(
            f"output store (STG{'.128' if o_width == 16 else ''})",
            "global",
            "store",
            o_width,
            [
                [out_addr(t, i, j) for t in warp]
                for warp in warps
                for i in range(c.tm)
                for j in range(0, c.tn, o_width // 4)
            ],
        )
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
