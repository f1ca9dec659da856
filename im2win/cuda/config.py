"""Compile-time configurations of the GPU im2win kernel: tile sizes and the paper's ablation switches.

A TileConfig becomes -D options of im2win/cuda/kernels/im2win.cu. `VARIANTS` is the ablation of the
Euro-Par 2023 paper (section on optimizations): the full kernel and each optimization switched off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

FLOAT_BYTES = 4
STATIC_SHARED_LIMIT = 48 * 1024  # bytes of static __shared__ a block may declare (every CUDA GPU)


@dataclass(frozen=True)
class TileConfig:
    bm: int = 128  # output pixels per block
    bn: int = 128  # output channels per block
    bk: int = 8  # reduction depth per shared-memory step
    tm: int = 8  # micro-tile rows per thread
    tn: int = 8  # micro-tile columns per thread
    smem: bool = True
    double_buffer: bool = True
    prefetch: bool = True
    vec_load: bool = True
    async_copy: bool = False  # cp.async global -> shared (sm_80+), instead of registers
    stages: int = 2  # with async_copy: shared-memory buffers, stages - 1 steps' copies in flight
    min_blocks: int = 1  # blocks per SM the compiler must fit (__launch_bounds__): caps registers
    wide_index: bool = True  # 64-bit offsets; False only when every buffer has < 2**31 elements
    # slices of the reduction (split-K; a launch parameter): 0 chooses per launch from the tile
    # count and the GPU's SMs (im2win.cuda.launch.split_slices)
    split_k: int = 0
    sliced: bool = False  # compiled for split-K launches (SPLIT_K); set by kernel(), not by hand
    # stage each quad of pixels' shared window band once (kernels/im2win_band.cu); the reduction
    # steps are then bk values of r*C + c, each with every filter column
    band: bool = False
    # the filter width and column stride a band kernel is compiled for (launch.for_shape sets the
    # layer's; 3 and 1 are conv6-conv12's)
    band_s: int = 3
    band_sx: int = 1
    # fit the block tile to the layer's output channels (launch.for_shape, fitted): where half
    # its channels still cover all K of them, half as many channels and twice as many pixels, so
    # no thread multiplies the zeros past K (conv3, conv4, conv7 and conv9 have K = 64)
    fit_k: bool = False
    # the window transform fused into the convolution: the kernel reads each A value from x where
    # the transform would have, through x's strides; no window tensor, no transform kernel
    fused: bool = False

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    @property
    def a_loads(self) -> int:
        return self.bm * self.bk // self.threads

    @property
    def row_run(self) -> int:
        """ROW_RUN: the consecutive A values of one tile row a thread loads together (a float4
        where the launch allows); its a_loads are a_loads / row_run such runs."""
        return min(self.a_loads, 4)

    @property
    def b_loads(self) -> int:
        return self.bk * self.bn // self.threads

    @property
    def b_run(self) -> int:
        """FILTER_RUN: the channels of one filter row a thread loads together: all its b_loads, or where
        those are more than 4 (and a multiple of 4) runs of 4, consecutive threads on consecutive
        runs."""
        return 4 if self.b_loads > 4 and self.b_loads % 4 == 0 else self.b_loads

    @property
    def band_cols(self) -> int:
        """LP: the floats a quad's band takes in the band kernel's A tile (as im2win_band.cu)."""
        cols = -(-(3 * self.band_sx + self.band_s) // 4) * 4
        return cols if cols % 32 else cols + 4

    @property
    def band_a_row(self) -> int:
        """AB_ROW: the band kernel's A-tile row, the block's BM / 4 quads' bands padded by 4."""
        return self.bm // 4 * self.band_cols + 4

    @property
    def shared_bytes(self) -> int:
        """Static shared memory of im2win_conv (window starts + A and B tiles, per buffer)."""
        if not self.smem:
            return 0
        if self.band:  # two buffers of As[BK][AB_ROW] and Bs[S * BK][BN]
            return 2 * self.bk * (self.band_a_row + self.band_s * self.bn) * FLOAT_BYTES
        buffers = self.stages if self.async_copy else 2 if self.double_buffer else 1
        # one window start per tile row (a fused kernel keeps its rows' starts in registers)
        index_bytes = 0 if self.fused else 8 if self.wide_index else 4
        a_row = self.bm + 4  # As rows are padded by 4 floats
        return self.bm * index_bytes + buffers * self.bk * (a_row + self.bn) * FLOAT_BYTES

    @property
    def lanes(self) -> tuple[int, int]:
        """(LY, LX): a warp's lanes along the pixels and along the channels (as the kernel's)."""
        lx = min(self.bn // self.tn, 4)
        return 32 // max(lx, 1), lx

    @property
    def warp_tile(self) -> tuple[int, int]:
        """(WM, WN): the pixels x channels one warp computes."""
        ly, lx = self.lanes
        return ly * self.tm, lx * self.tn

    def fitted(self, k: int) -> TileConfig:
        """This tile for `k` output channels where fit_k asks: bn halved and bm doubled while bn / 2
        still covers k, and the halved tile still splits into the same warp tiles, can compile
        (problems) and fits in static shared memory. The threads, the warp tile and each thread's
        micro-tile stay as they are; so does the grid's one column of tiles along K, and with it
        how often each window row is read."""
        config = self
        while self.fit_k and config.bn // 2 >= k:
            half = config.replace(bn=config.bn // 2, bm=config.bm * 2)
            if (
                half.warp_tile != config.warp_tile
                or half.problems()
                or half.shared_bytes > STATIC_SHARED_LIMIT
            ):
                break
            config = half
        return config

    def problems(self) -> list[str]:
        """Why this configuration cannot be compiled or launched (empty when it can)."""
        out = []
        if min(self.bm, self.bn, self.bk, self.tm, self.tn) < 1:
            out.append("every tile size must be >= 1")
            return out
        if self.split_k < 0:
            out.append(f"split_k={self.split_k}: 0 (automatic) or a number of slices >= 1")
        if self.bm % self.tm or self.bn % self.tn:
            out.append(
                f"bm={self.bm} must be a multiple of tm={self.tm} and bn={self.bn} of tn={self.tn}"
            )
            return out
        if not 1 <= self.threads <= 1024:
            out.append(f"{self.threads} threads per block; CUDA allows 1..1024")
        if self.threads % 32:
            out.append(f"{self.threads} threads per block: the warp tiling needs whole warps")
        elif self.bm % self.warp_tile[0] or self.bn % self.warp_tile[1]:
            out.append(
                f"the {self.bm}x{self.bn} block tile does not split into {self.warp_tile[0]}x"
                f"{self.warp_tile[1]} warp tiles"
            )
        if self.stages not in (2, 3, 4) or (self.stages != 2 and not self.async_copy):
            out.append(f"stages={self.stages}: 2, or 3-4 with async_copy")
        if self.async_copy and not (self.smem and self.double_buffer):
            out.append(
                "async_copy copies into the second shared-memory buffer: needs smem and "
                "double_buffer"
            )
        for name, size in (("tm", self.tm), ("tn", self.tn)):
            if size > 4 and size % 4:
                out.append(f"{name}={size}: micro-tiles above 4 must be made of 4-wide sub-tiles")
        if self.fused and (self.band or self.async_copy or not self.smem):
            out.append(
                "fused loads its A values from x through registers into shared memory: not with "
                "band or async_copy, and only with smem"
            )
        if self.band:
            out += self._band_problems()
        elif self.smem:
            if (self.bm * self.bk) % self.threads or (self.bk * self.bn) % self.threads:
                out.append(
                    f"the A tile ({self.bm}x{self.bk}) and B tile ({self.bk}x{self.bn}) must "
                    f"split evenly over {self.threads} threads"
                )
            elif (
                self.a_loads == 0
                or self.b_loads == 0
                or self.bk % self.row_run
                or self.a_loads % self.row_run
                or self.bn % self.b_run
                or self.threads * self.b_run % self.bn
            ):
                out.append(
                    "each thread's A and B loads must be whole runs inside one tile row (A: runs "
                    "of min(a_loads, 4), bk and a_loads multiples of it; B: runs of b_run, bn and "
                    "threads * b_run multiples of it)"
                )
        return out

    def _band_problems(self) -> list[str]:
        out = []
        if not (self.smem and self.double_buffer) or self.async_copy:
            out.append(
                "band stages its tiles through two shared buffers: smem and double_buffer, "
                "without async_copy"
            )
        if self.tm % 4 or self.tn % 4:
            out.append(
                f"band needs 4 x 4 sub-tiles (one quad of pixels each): tm={self.tm} and "
                f"tn={self.tn} must be multiples of 4"
            )
        if self.bk > 4 and self.bk % 4:
            out.append(
                f"bk={self.bk}: band loads runs of 4 values of r*C + c; bk <= 4 or a multiple of 4"
            )
        if self.band_s < 1 or self.band_sx < 1:
            out.append(f"band_s={self.band_s}, band_sx={self.band_sx}: both >= 1")
        return out

    def defines(self) -> dict[str, int]:
        return {
            "BM": self.bm,
            "BN": self.bn,
            "BK": self.bk,
            "TM": self.tm,
            "TN": self.tn,
            "SMEM": int(self.smem),
            "DOUBLE_BUFFER": int(self.double_buffer),
            "PREFETCH": int(self.prefetch),
            "VEC_LOAD": int(self.vec_load),
            "ASYNC_COPY": int(self.async_copy),
            "STAGES": self.stages,
            "MIN_BLOCKS": self.min_blocks,
            "WIDE_INDEX": int(self.wide_index),
            "SPLIT_K": int(self.sliced),
            "BAND": int(self.band),
            "FUSED": int(self.fused),
            **({"BAND_S": self.band_s, "BAND_SX": self.band_sx} if self.band else {}),
        }

    def options(self) -> list[str]:
        return [f"-D{k}={v}" for k, v in self.defines().items()]

    def kernel(self, slices: int = 1) -> TileConfig:
        """The compiled kernel that runs this configuration in `slices` slices of the reduction:
        the launch parameter dropped, split-K compiled in only where slices > 1, so the unsplit
        kernel keeps exactly the registers it has without split-K."""
        return self.replace(split_k=0, sliced=slices > 1)

    def replace(self, **changes) -> TileConfig:
        return dataclasses.replace(self, **changes)


PAPER_TILE = TileConfig(wide_index=False)
"""The authors' tiling: 128 x 128 blocks, K-tile 8, 256 threads, 8 x 8 micro-tiles (25% occupancy)."""

DEFAULT = TileConfig(min_blocks=2, wide_index=False)
"""128 x 128 blocks of 256 threads with 8 x 8 micro-tiles in 64 x 32 warp tiles, registers capped for
2 blocks per SM. The tile chosen by measured speed: on an H100 at batch 128 the paper's 128 x 128 /
8 x 8 tile beat the 64 x 128 / 4 x 8 tile chosen earlier for occupancy on all 12 layers (17.6
against 12.7 TFLOP/s geomean, before the warp tiling)."""

SGEMM_TILE = TileConfig(bm=256, bn=128, tm=16, tn=8, wide_index=False)
"""The tiling of cuBLAS's fastest FP32 kernel on an H100, 51.6 TFLOP/s (77% of the FMA peak):
`..._tilesize256x128x8_stage3_warpsize4x2x1_ffma`. 256 x 128 blocks of 8 warps, 128 outputs a
thread (16 x 8), one block an SM. Its main loop feeds 21 FFMA per shared-load instruction (16 for
8 x 8) and is 86% FFMA (79%); 128 x 32 warp tiles keep every shared access conflict-free by the
model, where 128 x 256 (8 x 16) would store its B tile 2-way conflicted."""

WIDE_THREAD_TILE = TileConfig(
    bm=128, bn=128, tm=16, tn=8, min_blocks=2, wide_index=False, fit_k=True
)
"""cuBLAS's 128 outputs a thread (16 x 8) in the default's 128 x 128 block, of 4 warps instead of
8, so that two blocks share an SM (219 registers on sm_90, no spills): a thread's 16 + 8 fragment
floats feed 128 FFMAs, and the model's shared clocks per FFMA clock fall from 1.06 (8 x 8: the
shared pipe as busy as the FMA pipe) to 0.81, with the barrier stalls of one block covered by the
other (`sgemm_tile`, 0.80, runs one block of 8 warps an SM). Fitted to K (fit_k)."""

VARIANTS: dict[str, TileConfig] = {
    "im2win": DEFAULT,
    "no_prefetch": DEFAULT.replace(prefetch=False),
    "no_vector_load": DEFAULT.replace(vec_load=False),
    "no_double_buffer": DEFAULT.replace(double_buffer=False),
    # the authors' older kernel: 16 x 16 tiles, one output per thread
    "no_micro_kernel": TileConfig(
        bm=16, bn=16, bk=16, tm=1, tn=1, vec_load=False, wide_index=False
    ),
    "occupancy_tile": TileConfig(bm=64, bn=128, tm=4, tn=8, min_blocks=4, wide_index=False),
    "no_smem": DEFAULT.replace(smem=False, double_buffer=False, prefetch=False, vec_load=False),
    "paper_tile": PAPER_TILE,
    "async_copy": DEFAULT.replace(async_copy=True),  # beyond the paper: cp.async, no staging
    "async_copy_3_stages": DEFAULT.replace(async_copy=True, stages=3),
    # beyond the paper: one shared window band per 4 pixels; bk = 4 values of r*C + c a step, each
    # with the 3 filter columns of conv6-conv12 (launch.for_shape makes it for a layer)
    "band": DEFAULT.replace(band=True, bk=4),
    "sgemm_tile": SGEMM_TILE,  # beyond the paper: cuBLAS's FFMA tiling on the H100
    # beyond the paper: both, the window bands in that tiling (255 registers on sm_90, no spills)
    "sgemm_tile_band": SGEMM_TILE.replace(band=True, bk=4),
    # beyond the paper: the tile fitted to the layer's output channels (256 x 64 where K = 64), in
    # the default, without its second buffer (the H200's fastest variant), and in cuBLAS's tiling
    "fit_k": DEFAULT.replace(fit_k=True),
    "fit_k_no_double_buffer": DEFAULT.replace(fit_k=True, double_buffer=False),
    "sgemm_tile_fit_k": SGEMM_TILE.replace(fit_k=True),
    "wide_thread_tile": WIDE_THREAD_TILE,  # beyond the paper: 16 x 8 a thread, 2 blocks an SM
    # beyond the paper: the window transform fused into the convolution (A read from x), in the
    # default and in the H200 run's fastest tilings (sgemm_tile_fit_k over all layers;
    # wide_thread_tile on conv7 and conv9)
    "fused": DEFAULT.replace(fused=True),
    "sgemm_tile_fit_k_fused": SGEMM_TILE.replace(fit_k=True, fused=True),
    "wide_thread_tile_fused": WIDE_THREAD_TILE.replace(fused=True),
}
"""The ablation: the full kernel, each of the paper's optimizations switched off, the paper's tiling,
the default with cp.async copies, 1 and 2 steps ahead, the default staging window bands, cuBLAS's
256 x 128 tiling, the bands in that tiling, tiles fitted to the layer's output channels, 16 x 8
outputs a thread in blocks of 4 warps, and the window transform fused into the convolution (each
measured beside it before it may become the default)."""

AUTOTUNE_CANDIDATES: list[TileConfig] = [
    TileConfig(bm=bm, bn=bn, bk=bk, tm=tm, tn=tn, min_blocks=mb, wide_index=False)
    for bm, bn, bk, tm, tn, mb in [
        (64, 128, 8, 4, 8, 4),
        (128, 64, 8, 8, 4, 4),
        (64, 64, 8, 4, 4, 4),
        (128, 128, 8, 8, 8, 1),
        (128, 128, 8, 8, 8, 2),
        (32, 128, 8, 4, 4, 4),
        (128, 32, 8, 4, 4, 4),
        # the default's threads and warp tiles on a quarter of its channels: K = 96 in three
        # tiles (conv1, conv2) without a zero column; one block an SM (at 128 registers its four
        # window rows a thread spill 24 bytes)
        (512, 32, 8, 8, 8, 1),
    ]
] + [
    # and on half of them, K = 64 (conv3, conv4, conv7, conv9), as fit_k makes it, here with
    # cp.async copies (with registers between, as fit_k, it spills 12 bytes on sm_86 and sm_89)
    DEFAULT.replace(bm=256, bn=64, async_copy=True),
    WIDE_THREAD_TILE.replace(fit_k=False),
    DEFAULT.replace(async_copy=True),
    DEFAULT.replace(async_copy=True, stages=3),
    DEFAULT.replace(band=True, bk=4),
    SGEMM_TILE,
    SGEMM_TILE.replace(band=True, bk=4),
    SGEMM_TILE.replace(fused=True),
]
"""Tile configurations the autotuner proposes first, before its own (all compile for every target,
and all have conflict-free shared memory access by the model; their spills, occupancy and main-loop
mix are in results/im2win-nvrtc). BK = 16 is left to the search: conflict-free since each warp's
A runs come a 32-byte sector of its rows at a time (im2win.cu's SECTOR_RUNS), but at the default's
128-register cap its main loop is no richer in FFMA (78% against 79% on sm_90) and spills on
sm_80."""
