"""The pieces of the access model (im2win/cuda/access.py, access_band.py): an access site and
how one warp request is served, in shared-memory wavefronts (bank conflicts) and global 32-byte
sectors, and the row kernel's index math for one configuration (the functions of im2win.cu, in
Python).

Shared memory has 32 banks of 4 bytes. A warp's request is served in phases (all 32 lanes for
32-bit accesses, 16 for 64-bit, 8 for 128-bit); a phase takes as many wavefronts as the most
distinct 4-byte words any one bank must deliver (lanes reading the same word share it). The ideal
is one wavefront per 32 distinct words of a phase. Global requests are served in 32-byte sectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from im2win.cuda.config import TileConfig

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


def site(name: str, space: str, kind: str, width: int, lanes_per_request: list) -> Site:
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


class KernelIndex:
    """The kernel's index math for one configuration (the functions of im2win.cu, in Python)."""

    def __init__(self, config: TileConfig, legacy: bool):
        self.c, self.legacy = config, legacy
        self.threads = config.threads
        self.as_row = config.bm if legacy else config.bm + 4
        self.a_loads, self.b_loads = config.a_loads, config.b_loads
        self.a_run = config.a_loads if legacy else config.row_run
        self.b_run = config.b_loads if legacy else config.b_run
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
        """(row, first t) of each run of this thread's A loads (ROW_RUN long, the runs of a 32-byte
        sector on consecutive threads, a row's sectors in rounds of the tile's rows: im2win.cu's
        SECTOR_RUNS; the legacy kernel: one run of all of them)."""
        if self.legacy:
            e = tid * self.a_loads
            return [(e // self.c.bk, e % self.c.bk)]
        run = self.c.row_run
        sector_runs = min(8 // run, self.c.bk // run)  # SECTOR_RUNS
        out = []
        for r in range(self.a_loads // run):
            sector = tid // sector_runs + r * (self.threads // sector_runs)
            out.append(
                (sector % self.c.bm, (sector // self.c.bm * sector_runs + tid % sector_runs) * run)
            )
        return out

    def b_runs(self, tid: int) -> list[tuple[int, int]]:
        """(filter row, first channel) of each run of this thread's B loads (FILTER_RUN long,
        FILTER_ROWS_APART rows apart; the legacy kernel: one run of all of them)."""
        e = tid * self.b_run
        apart = self.threads * self.b_run // self.c.bn
        return [
            (e // self.c.bn + r * apart, e % self.c.bn) for r in range(self.b_loads // self.b_run)
        ]
