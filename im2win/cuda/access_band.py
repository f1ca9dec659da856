"""The access model (im2win/cuda/access.py) of the window-band kernel, kernels/im2win_band.cu:
the same sites, from that kernel's index math."""

from __future__ import annotations

from im2win.cuda.access_sites import WARP, KernelIndex, Site, site
from im2win.cuda.config import TileConfig
from im2win.shapes import ConvShape


def band_model(config: TileConfig, shape: ConvShape) -> list[Site]:
    """The sites of the band kernel (kernels/im2win_band.cu), the same way: block (0, 0), its first
    step (bk values of r*C + c, every filter column)."""
    k = KernelIndex(config, legacy=False)
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
        site(
            "A band store (STS)",
            "shared",
            "store",
            4,
            [[a_store(r, j) for r in req] for req in a_requests for j in range(a_run)],
        ),
        site(
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
        site(
            "A band load (LDS.128)",
            "shared",
            "load",
            16,
            [[f(t) * 4 for t in warp] for _ in range(c.bk) for warp in warps for f in band_loads],
        )
    )
    sites.append(
        site(
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
        return site(f"{name} (LDG{'.128' if vec else ''})", "global", "load", width, lanes)

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
        site(
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
