"""The access model (im2win/cuda/access.py) of the window transform, im2win_window in
kernels/im2win.cu: from the kernel's index math, every warp request of one block, its global
sectors (loads from x, stores to Iw) and shared-memory wavefronts (the tile's stores and loads).

The transform moves bytes and computes nothing, so what counts is how whole its sectors are: a
store of 12 bytes in a 32-byte sector costs the memory system a sector all the same.

`legacy=True` models the kernel as it was up to c72bc28, one block a window row (n, p, r) and a
tile of TC <= 32 channels x 1024 / TC columns, which the H200 run at cc02389 timed at 0.24-1.31
TB/s (results/im2win-gpu), so that the two can be set side by side.
"""

from __future__ import annotations

from im2win.cuda.access_sites import WARP, Site, site
from im2win.cuda.launch import (
    WINDOW_ROWS_TILE_LOG2,
    WINDOW_THREADS,
    contiguous_strides,
    window_c_inner,
    window_launch,
    window_rows_launch,
    window_tile,
)
from im2win.shapes import ConvShape

F = 4  # bytes of a float

LEGACY_TILE_FLOATS = 1 << WINDOW_ROWS_TILE_LOG2  # im2win_window_rows's tile


def _requests(per_thread: list[list]) -> list[list]:
    """Warp requests from each thread's accesses in program order: request k of a warp is every
    lane's k-th access (None where a lane has none: inactive)."""
    out = []
    for w0 in range(0, len(per_thread), WARP):
        lanes = per_thread[w0 : w0 + WARP]
        for k in range(max(len(a) for a in lanes)):
            out.append([a[k] if k < len(a) else None for a in lanes])
    return out


def _sites(loads, tile_stores, tile_loads, stores) -> list[Site]:
    return [
        site("x load", "global", "load", F, _requests(loads)),
        site("tile store", "shared", "store", F, _requests(tile_stores)),
        site("tile load", "shared", "load", F, _requests(tile_loads)),
        site("Iw store", "global", "store", F, _requests(stores)),
    ]


def _block(shape: ConvShape) -> tuple[int, int, int]:
    """(n, p, window column tile) of the modelled block: an output row in the middle of image 0,
    whose window rows lie in the input, and the first column tile."""
    return 0, shape.p // 2, 0


def window_model(shape: ConvShape, channels_last: bool = False, legacy: bool = False) -> list[Site]:
    """Every access site of one block of im2win_window on `shape` (input NCHW, or channels_last),
    as byte addresses relative to x and Iw; inactive accesses (outside the input, past C or Wu)
    as the kernel leaves them out."""
    model = _legacy if legacy else _current
    strides = contiguous_strides(shape, channels_last)
    return model(shape, strides, window_c_inner(shape, strides))


def _current(shape: ConvShape, strides, c_inner: bool) -> list[Site]:
    sn, sc, sh, sw = strides
    tile = window_tile(shape, c_inner)
    tr_, tc_, tw_, wp, rcp = tile.tr, tile.tc, tile.tw, tile.w_pitch, tile.rc_pitch
    assert window_launch(shape, strides).args[-3:] == (wp, rcp, int(c_inner))
    n, p, y = _block(shape)
    tc_log2, tw_log2 = tc_.bit_length() - 1, tw_.bit_length() - 1
    c, wu, r_all = shape.c, shape.window_width, shape.r
    w0, c0, r0 = y * tw_, 0, 0
    tr, tc, tw = min(r_all - r0, tr_), min(c - c0, tc_), min(wu - w0, tw_)
    h0 = p * shape.stride[0] + r0 - shape.padding[0]
    px = shape.padding[1]

    def x_at(r: int, cc: int, w: int) -> int | None:
        h, wi = h0 + r, w0 + w - px
        if cc < tc and w < tw and 0 <= h < shape.h and 0 <= wi < shape.w:
            return F * (n * sn + (c0 + cc) * sc + h * sh + wi * sw)
        return None

    loads, tile_stores, tile_loads, stores = [], [], [], []
    for tid in range(WINDOW_THREADS):
        ld, ts = [], []
        if c_inner:
            cc, step = tid & (tc_ - 1), WINDOW_THREADS >> tc_log2
            for rw in range(tid >> tc_log2, tr << tw_log2, step):
                r, w = rw >> tw_log2, rw & (tw_ - 1)
                ld.append(x_at(r, cc, w))
                ts.append(F * (w * wp + ((r << tc_log2) + cc) * rcp))
        else:
            w, step = tid & (tw_ - 1), WINDOW_THREADS >> tw_log2
            for rc in range(tid >> tw_log2, tr << tc_log2, step):
                r, cc = rc >> tc_log2, rc & (tc_ - 1)
                ld.append(x_at(r, cc, w))
                ts.append(F * (w * wp + rc * rcp))
        loads.append(ld)
        tile_stores.append(ts)
        cc, step = tid & (tc_ - 1), WINDOW_THREADS >> tc_log2
        step_w, step_r = divmod(step, tr)
        w, r = divmod(tid >> tc_log2, tr)
        tl, st = [], []
        while w < tw:
            inside = cc < tc
            tl.append(F * (w * wp + ((r << tc_log2) + cc) * rcp) if inside else None)
            np_ = n * shape.p + p
            st.append(
                F * (((np_ * wu + w0 + w) * r_all + r0 + r) * c + c0 + cc) if inside else None
            )
            w, r = w + step_w, r + step_r
            if r >= tr:
                w, r = w + 1, r - tr
        tile_loads.append(tl)
        stores.append(st)
    return _sites(loads, tile_stores, tile_loads, stores)


def _legacy(shape: ConvShape, strides, c_inner: bool) -> list[Site]:
    sn, sc, sh, sw = strides
    # the launch's tile, as the kernel reads it
    tc_log2 = window_rows_launch(shape, strides).args[-2]
    tc_, tw_ = 1 << tc_log2, LEGACY_TILE_FLOATS >> tc_log2
    tw_log2 = tw_.bit_length() - 1
    n, p, _ = _block(shape)
    r = shape.r // 2  # a window row in the middle of the filter
    c, wu, r_all, px = shape.c, shape.window_width, shape.r, shape.padding[1]
    h = p * shape.stride[0] + r - shape.padding[0]
    np_ = n * shape.p + p
    loads, tile_stores, tile_loads, stores = [], [], [], []
    for tid in range(WINDOW_THREADS):
        ld, ts, tl, st = [], [], [], []
        for i in range(tid, LEGACY_TILE_FLOATS, WINDOW_THREADS):
            cl = (i & (tc_ - 1)) if c_inner else (i >> tw_log2)
            wl = (i >> tc_log2) if c_inner else (i & (tw_ - 1))
            wi = wl - px
            inside = 0 <= h < shape.h and cl < c and 0 <= wi < shape.w
            ld.append(F * (n * sn + cl * sc + h * sh + wi * sw) if inside else None)
            ts.append(F * (cl * (tw_ + 1) + wl))
        for i in range(tid, LEGACY_TILE_FLOATS, WINDOW_THREADS):
            cl, wl = i & (tc_ - 1), i >> tc_log2
            inside = cl < c and wl < wu
            tl.append(F * (cl * (tw_ + 1) + wl) if inside else None)
            st.append(F * (((np_ * wu + wl) * r_all + r) * c + cl) if inside else None)
        loads.append(ld)
        tile_stores.append(ts)
        tile_loads.append(tl)
        stores.append(st)
    return _sites(loads, tile_stores, tile_loads, stores)


def window_summary(sites: list[Site]) -> dict:
    """Useful bytes per 32-byte sector of the loads from x and the stores to Iw, wavefronts per
    ideal wavefront of the tile's shared stores and loads (1.0: conflict-free), and the share of a
    block's warp lanes that move a value (idle lanes: columns past Wu or channels past C in a
    tile)."""
    by = {s.name: s for s in sites}
    moved = by["Iw store"].bytes_used // F
    return {
        "x_load_bytes_per_sector": by["x load"].sector_use,
        "iw_store_bytes_per_sector": by["Iw store"].sector_use,
        "tile_store_ways": by["tile store"].ways,
        "tile_load_ways": by["tile load"].ways,
        "store_lane_use": moved / (WARP * by["Iw store"].requests),
    }
