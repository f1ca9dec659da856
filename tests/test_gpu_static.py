"""What can be known of the GPU kernel without a GPU: its memory access pattern (modelled from its
index math) and the machine code NVRTC makes of its main loop."""

import pytest

from im2win.cuda import access, sass
from im2win.cuda.access_window import window_model, window_summary
from im2win.cuda.compile import compile_cubin, kernels_for
from im2win.cuda.config import (
    AUTOTUNE_CANDIDATES,
    DEFAULT,
    STATIC_SHARED_LIMIT,
    VARIANTS,
    TileConfig,
)
from im2win.cuda.launch import band_depth, conv_launch, for_shape, pixel_rows, reduction_steps
from im2win.shapes import PAPER_GPU_LAYERS, PAPER_LAYERS, ConvShape

LEGACY_DEFAULT = TileConfig(bm=64, bn=128, tm=4, tn=8, min_blocks=4, wide_index=False)


def test_the_model_reproduces_what_nsight_measured_on_the_old_kernel():
    """Nsight Compute, conv10 at batch 128 on an H100, main at 1cf3772 (the issue's figures):
    shared loads 6-way with 44% of their wavefronts excessive, shared stores 4-way with 75%,
    global loads 24 and output stores 4 useful bytes per 32-byte sector."""
    shape = PAPER_LAYERS["conv10"].with_batch(128)
    got = access.summary(access.model(LEGACY_DEFAULT, shape, legacy=True))
    assert got["shared_load_wavefronts_per_request"] == pytest.approx(6.67, abs=0.1)
    assert got["shared_load_excess"] == pytest.approx(0.44, abs=0.05)
    assert got["shared_store_wavefronts_per_request"] == 4
    assert got["shared_store_excess"] == 0.75
    assert got["global_load_bytes_per_sector"] == 24
    assert got["global_store_bytes_per_sector"] == 4


@pytest.mark.parametrize(
    "tile, l1_busy, fma_busy",
    [
        (LEGACY_DEFAULT, 0.978, 0.314),
        (TileConfig(wide_index=False), 0.865, 0.483),  # the paper's 128 x 128 / 8 x 8 tile
    ],
    ids=["default_tile", "paper_tile"],
)
def test_the_shared_pipe_demand_predicts_the_fma_share_nsight_measured(tile, l1_busy, fma_busy):
    """Nsight Compute, conv10 at batch 128 on an H100, the kernel at 1cf3772: L1/TEX throughput and
    the FMA pipe's share of the elapsed cycles. With the shared pipe that busy, the model's demand
    (2.9 and 1.7 shared clocks per FFMA clock) leaves the FMA pipe l1_busy / demand of the time:
    34% and 51%, against 31% and 48% measured (the L1 pipe also carries the global loads)."""
    demand = access.shared_pipe_demand(tile, PAPER_LAYERS["conv10"].with_batch(128), legacy=True)
    assert l1_busy / demand == pytest.approx(fma_busy, abs=0.04)


def test_the_sgemm_tile_leaves_the_fma_pipe_the_bound():
    """8 x 8 outputs a thread need about as many shared clocks as FFMA clocks on sm_90 (1.06); the
    16 x 8 tile 0.8, so there the FMA pipe, not shared memory, is the bound."""
    conv10 = PAPER_LAYERS["conv10"].with_batch(128)
    assert access.shared_pipe_demand(VARIANTS["sgemm_tile"], conv10) <= 0.85
    assert access.shared_pipe_demand(VARIANTS["sgemm_tile_band"], conv10) <= 0.65  # 0.62
    assert 1.0 < access.shared_pipe_demand(DEFAULT, conv10) < 1.1
    # sm_80 has half the FP32 lanes: the same tile, half the demand
    assert access.shared_pipe_demand(DEFAULT, conv10, "sm_80") == pytest.approx(
        access.shared_pipe_demand(DEFAULT, conv10) / 2
    )


SHAPES = {
    "conv1": PAPER_LAYERS["conv1"].with_batch(8),  # C = 3: scalar window loads
    "conv10": PAPER_LAYERS["conv10"].with_batch(128),
    "conv12": PAPER_LAYERS["conv12"].with_batch(128),
    "odd": ConvShape(n=2, c=5, h=9, w=11, k=70, r=3, s=2, stride=(2, 1), padding=(1, 0)),
}


@pytest.mark.parametrize("layer", list(SHAPES))
@pytest.mark.parametrize(
    "name, config",
    [
        ("default", DEFAULT),
        ("occupancy_tile", VARIANTS["occupancy_tile"]),
        ("band", VARIANTS["band"]),
    ]
    + [(f"candidate{i}", c) for i, c in enumerate(AUTOTUNE_CANDIDATES)],
)
def test_shared_memory_access_is_conflict_free(layer, name, config):
    sites = access.model(config, SHAPES[layer])
    conflicted = {s.name: round(s.ways, 2) for s in sites if s.space == "shared" and s.ways > 1}
    assert not conflicted, f"{name} on {layer}: bank conflicts {conflicted}"


def test_output_stores_use_whole_sectors_when_k_allows():
    sites = access.model(DEFAULT, SHAPES["conv10"])
    store = next(s for s in sites if s.name.startswith("output"))
    assert store.width == 16 and store.sector_use == 32


def test_the_wavefront_rule():
    # 32 lanes reading 32 consecutive floats: one wavefront; the same word: one (broadcast)
    assert access.shared_wavefronts([4 * i for i in range(32)], 4) == (1, 1)
    assert access.shared_wavefronts([0] * 32, 4) == (1, 1)
    # a stride of 32 floats puts every lane in bank 0: 32 wavefronts
    assert access.shared_wavefronts([128 * i for i in range(32)], 4) == (32, 1)
    # float4 reads of 32 consecutive float4s: 4 phases of 8 lanes, one wavefront each
    assert access.shared_wavefronts([16 * i for i in range(32)], 16) == (4, 4)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize(
    "config, ffma_per_load, ffma_share",
    [(DEFAULT, 16, 0.78), (VARIANTS["sgemm_tile"], 21, 0.85)],
    ids=["default", "sgemm_tile"],
)
def test_the_main_loop_feeds_ffma_from_float4_shared_loads_and_never_spills(
    arch, config, ffma_per_load, ffma_share
):
    """8 x 8 outputs a thread: 16 FFMA per LDS.128; 16 x 8: 21. The FFMA share of the loop's
    instructions is the issue rate's ceiling (every other instruction takes an FFMA's slot)."""
    compiled = compile_cubin(config, arch)
    try:
        mix = sass.loop_mix(compiled.cubin)
    except sass.DisassemblerUnavailable as exc:
        pytest.skip(str(exc))
    assert mix["ffma"] >= 64 and mix["ffma_per_shared_load"] >= ffma_per_load
    assert mix["ffma"] / mix["instructions"] >= ffma_share
    assert set(mix["widths"]["LDS"]) == {128}  # every shared load is a float4
    assert mix["local_accesses"] == 0
    assert compiled.resources["im2win_conv"].spill_stores == 0


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("variant", ["async_copy", "async_copy_3_stages"])
def test_the_async_copy_main_loop_copies_global_to_shared_without_registers(arch, variant):
    """cp.async (LDGSTS) replaces the main loop's global loads and shared stores; no spills; the
    stages need as many shared buffers, and more than 2 need async_copy."""
    config = VARIANTS[variant]
    compiled = compile_cubin(config, arch)
    assert compiled.resources["im2win_conv"].spill_stores == 0
    assert compiled.resources["im2win_conv"].shared_bytes == config.shared_bytes
    try:
        mix = sass.loop_mix(compiled.cubin)
    except sass.DisassemblerUnavailable as exc:
        pytest.skip(str(exc))
    assert mix["ffma"] >= 64 and mix["local_accesses"] == 0
    assert "LDGSTS" in mix["widths"] and "LDG" not in mix["widths"] and "STS" not in mix["widths"]
    assert DEFAULT.replace(stages=3).problems()  # 3 buffers only with cp.async


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("layer", ["conv1", "conv3", "conv5", "conv10"])
@pytest.mark.parametrize("variant, ffma_per_load", [("band", 19), ("sgemm_tile_band", 27)])
def test_the_band_main_loop_feeds_more_ffma_per_shared_load_than_the_row_kernel(
    arch, layer, variant, ffma_per_load
):
    """Window bands: a quad's band columns loaded once per r*C + c and slid over in registers, so
    more FFMA per shared load than the row kernel's 16 (conv10: 64 * 3 FFMA for 2 * 2 band and
    2 * 3 filter float4s, 19.2; conv5: 22.9; in the 16 x 8 tiling 27-36), no spills nor stack
    (the 16 x 8 band kernel takes 242-255 registers), and the model's conflict-free access."""
    shape = PAPER_LAYERS[layer].with_batch(128)
    config = for_shape(VARIANTS[variant], shape)
    compiled = compile_cubin(config, arch)
    conv = compiled.resources["im2win_conv"]
    assert (conv.spill_stores, conv.spill_loads, conv.stack_bytes) == (0, 0, 0), conv
    sites = access.model(config, shape)
    assert all(s.ways == 1 for s in sites if s.space == "shared")
    try:
        mix = sass.loop_mix(compiled.cubin)
    except sass.DisassemblerUnavailable as exc:
        pytest.skip(str(exc))
    assert mix["ffma_per_shared_load"] >= ffma_per_load and mix["local_accesses"] == 0


def test_band_geometry_follows_the_layer():
    """for_shape compiles a band kernel for the layer's filter width and stride, with no more than
    launch.BAND_ROWS filter rows a step; tile rows are quads of 4 pixels of one output row."""
    conv1, conv10 = PAPER_LAYERS["conv1"], PAPER_LAYERS["conv10"]
    c1, c10 = for_shape(VARIANTS["band"], conv1), for_shape(VARIANTS["band"], conv10)
    assert (c1.band_s, c1.band_sx, c1.bk, c1.min_blocks) == (11, 4, 1, 1)  # 16 slide columns
    assert (c10.band_s, c10.band_sx, c10.bk, c10.min_blocks) == (3, 1, 4, 2)
    assert c10.band_cols == 8 and c1.band_cols == 24  # 3*sx + S, in float4s
    assert pixel_rows(conv10.with_batch(2), c10) == 2 * 26 * 28  # Q = 26: 7 quads a row
    assert pixel_rows(conv10.with_batch(2), DEFAULT) == 2 * 26 * 26
    assert reduction_steps(conv10, c10) == 3 * 128 // 4
    assert reduction_steps(conv10, DEFAULT) == 9 * 128 // 8
    assert [band_depth(8, s) for s in (1, 3, 5, 7, 11)] == [8, 4, 2, 1, 1]  # S * bk <= 12
    assert band_depth(3, 3) == 3 and band_depth(16, 1) == 8
    with pytest.raises(ValueError, match="for_shape"):
        conv_launch(conv1, c10, has_bias=False)  # compiled for 3/1, asked to run 11/4


def test_the_prebuilt_kernels_are_the_ones_a_gpu_run_resolves():
    """python -m im2win.cuda.compile fills the cache with what runtime.conv2d will ask for: each
    configuration made for the layer, compiled for split-K where the layer splits."""
    conv1, conv12 = PAPER_LAYERS["conv1"].with_batch(128), PAPER_LAYERS["conv12"].with_batch(128)
    kernels = kernels_for([VARIANTS["band"], DEFAULT], [conv1, conv12], sms=132)
    assert for_shape(VARIANTS["band"], conv1).kernel() in kernels  # conv1: S = 11, stride 4
    assert DEFAULT.kernel(slices=5) in kernels and DEFAULT.kernel() in kernels  # conv12 splits
    assert len(kernels_for([DEFAULT], [conv12], sms=None)) == 1  # no GPU: no split


def test_a_tile_fitted_to_the_output_channels():
    """fit_k: half as many channels and twice as many pixels while half the tile still covers K,
    the threads, warp tile and micro-tile unchanged; never past what compiles or static shared
    memory holds; nothing changes without fit_k or where K fills the tile."""
    fit = DEFAULT.replace(fit_k=True)
    tiles = {k: (fit.fitted(k).bm, fit.fitted(k).bn) for k in (1, 32, 33, 64, 65, 128, 500)}
    assert tiles == {
        1: (512, 32),  # a 32-channel warp tile is the narrowest
        32: (512, 32),
        33: (256, 64),
        64: (256, 64),  # conv3, conv4, conv7, conv9
        65: (128, 128),
        128: (128, 128),
        500: (128, 128),
    }
    for k in (1, 64):
        c = fit.fitted(k)
        assert c.threads == DEFAULT.threads and c.warp_tile == DEFAULT.warp_tile
        assert not c.problems() and c.shared_bytes <= STATIC_SHARED_LIMIT
    assert DEFAULT.fitted(64) == DEFAULT  # fit_k off
    sgemm = VARIANTS["sgemm_tile_fit_k"].fitted(64)
    assert (sgemm.bm, sgemm.bn, sgemm.row_run, sgemm.a_loads) == (512, 64, 4, 16)
    conv9 = PAPER_LAYERS["conv9"].with_batch(128)
    assert (for_shape(fit, conv9).bm, for_shape(fit, conv9).bn) == (256, 64)
    assert for_shape(fit, conv9) == for_shape(for_shape(fit, conv9), conv9)  # made once


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("variant", ["fit_k", "fit_k_no_double_buffer", "sgemm_tile_fit_k"])
def test_the_fitted_tiles_compile_without_spills_and_access_shared_memory_without_conflicts(
    arch, variant
):
    """On the K = 64 layers: the main loop of the fitted tile feeds as many FFMA per shared load
    as the tile it was fitted from, never spills, and the model finds no bank conflict; its
    A loads are runs of 4 floats (whole 32-byte sectors of 16 window rows a request)."""
    shape = PAPER_LAYERS["conv9"].with_batch(128)
    config = for_shape(VARIANTS[variant], shape)
    assert config.bn == 64 and config.row_run == 4
    sites = access.model(config, shape)
    assert all(s.ways == 1 for s in sites if s.space == "shared")
    window = next(s for s in sites if s.name.startswith("A window"))
    assert window.sector_use == 32
    compiled = compile_cubin(config.kernel(), arch)
    conv = compiled.resources["im2win_conv"]
    assert (conv.spill_stores, conv.spill_loads, conv.stack_bytes) == (0, 0, 0), conv
    try:
        mix = sass.loop_mix(compiled.cubin)
    except sass.DisassemblerUnavailable as exc:
        pytest.skip(str(exc))
    wide = variant.startswith("sgemm")
    assert mix["ffma_per_shared_load"] >= (21 if wide else 16) and mix["local_accesses"] == 0


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("layer", ["conv9", "conv10"])
def test_the_wide_thread_tile_leaves_the_fma_pipe_the_bound_with_two_blocks_an_sm(arch, layer):
    """16 x 8 outputs a thread in 128-thread blocks: 21 FFMA per shared load, the model's shared
    clocks per FFMA clock at most 0.85 on sm_90 (8 x 8: 1.06), every shared access conflict-free
    (its B loads in runs of 4: one run of 8 a thread stored 2-way conflicted), whole sectors, no
    spills at the register cap of two blocks an SM; fitted to conv9's K = 64 (256 x 64) too."""
    shape = PAPER_LAYERS[layer].with_batch(128)
    config = for_shape(VARIANTS["wide_thread_tile"], shape)
    assert config.threads == 128 and config.min_blocks == 2 and config.b_run == 4
    sites = access.model(config, shape)
    assert all(s.ways == 1 for s in sites if s.space == "shared")
    assert all(s.sector_use == 32 for s in sites if s.space == "global")
    assert access.shared_pipe_demand(config, shape) <= 0.85
    compiled = compile_cubin(config.kernel(), arch)
    conv = compiled.resources["im2win_conv"]
    assert (conv.spill_stores, conv.spill_loads, conv.stack_bytes) == (0, 0, 0), conv
    assert conv.registers * config.threads * 2 <= 65536  # two blocks an SM
    try:
        mix = sass.loop_mix(compiled.cubin)
    except sass.DisassemblerUnavailable as exc:
        pytest.skip(str(exc))
    assert mix["ffma_per_shared_load"] >= 21 and mix["local_accesses"] == 0


@pytest.mark.parametrize(
    "config",
    [
        DEFAULT.replace(bk=16),
        DEFAULT.replace(bk=16, async_copy=True),
        DEFAULT.replace(bk=16, bm=256, bn=64),
        VARIANTS["wide_thread_tile"].replace(bk=16, fit_k=False),
        TileConfig(bm=64, bn=64, bk=16, tm=4, tn=4, wide_index=False),
    ],
    ids=["default", "async_copy", "256x64", "wide_thread_tile", "64x64_4x4"],
)
def test_sixteen_deep_steps_store_their_a_tile_without_bank_conflicts(config):
    """BK = 16: a row's two 32-byte sectors a step come in two rounds of the tile's rows, a warp's
    runs pairing up within one sector, so that its transposed stores stay within two groups of 16
    banks (one thread a row for all 16 t stored 2-way conflicted) and its loads read whole
    sectors; every element of the tile is loaded once."""
    shape = PAPER_LAYERS["conv10"].with_batch(128)
    sites = access.model(config, shape)
    assert all(s.ways == 1 for s in sites if s.space == "shared"), config
    assert next(s for s in sites if s.name.startswith("A window")).sector_use == 32
    k = access.KernelIndex(config, legacy=False)
    elements = [
        (row, t + j)
        for tid in range(config.threads)
        for row, t in k.a_runs(tid)
        for j in range(config.row_run)
    ]
    assert sorted(elements) == [(row, t) for row in range(config.bm) for t in range(config.bk)]


@pytest.mark.parametrize("layer", list(PAPER_GPU_LAYERS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_window_transform_writes_whole_sectors(layer, channels_last):
    """im2win_window on every paper layer (batch 128), by the model: Iw's stores use 24 bytes
    or more of each 32-byte sector (3 of 4 lanes where C = 3; whole sectors elsewhere), x's loads
    no fewer than the kernel up to c72bc28 used, the tile's shared stores and loads at most 2-way,
    and no fewer of a block's lanes busy than then."""
    shape = PAPER_GPU_LAYERS[layer]
    new = window_summary(window_model(shape, channels_last))
    old = window_summary(window_model(shape, channels_last, legacy=True))
    assert new["iw_store_bytes_per_sector"] >= (24 if shape.c == 3 else 32)
    assert new["x_load_bytes_per_sector"] >= old["x_load_bytes_per_sector"] - 1e-9
    assert max(new["tile_store_ways"], new["tile_load_ways"]) <= 2
    assert new["store_lane_use"] >= old["store_lane_use"]


def test_the_window_model_sees_the_old_kernels_partial_stores():
    """Up to c72bc28 a block wrote one window row: runs of C floats R*C apart, 12 bytes of 32 a
    sector and a 3-way shared load where C = 3 (conv1-3, conv7), and on conv12 (7 columns of a
    32-column tile) a quarter of its lanes busy."""
    for layer in ("conv1", "conv3"):
        old = window_summary(window_model(PAPER_GPU_LAYERS[layer], legacy=True))
        assert old["iw_store_bytes_per_sector"] < 10 and old["tile_load_ways"] == 3
    conv12 = window_summary(window_model(PAPER_GPU_LAYERS["conv12"], legacy=True))
    assert conv12["store_lane_use"] < 0.25


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_fused_kernel_reads_each_value_where_the_window_tensor_holds_it(channels_last):
    """access.input_offset, the fused kernel's index math as the model uses it: for every pixel m
    and reduction index t of a strided, padded layer, x there (zero in the padding) is the window
    tensor's A[m][t] (access.window_offset), as the CPU transform builds it."""
    import torch

    from im2win.transform import window_nhwc

    shape = ConvShape(n=2, c=3, h=7, w=8, k=4, r=3, s=4, stride=(2, 1), padding=(1, 2))
    x = torch.randn(shape.input_shape())
    iw = window_nhwc(x, shape).flatten()
    flat = (x.permute(0, 2, 3, 1) if channels_last else x).flatten()
    for m in range(shape.n * shape.p * shape.q):
        for t in range(shape.s * shape.r * shape.c):
            at = access.input_offset(shape, m, t, channels_last)
            assert iw[access.window_offset(shape, m, t)] == (0.0 if at is None else flat[at])


@pytest.mark.parametrize("layer", ["conv10", "conv12"])
def test_fused_channels_last_input_loads_use_whole_sectors(layer):
    """Where C % 4 == 0 a fused kernel's A loads from a channels_last x are float4s of whole
    sectors, as its twin's from the window tensor; from NCHW, scalar loads (C floats apart)."""
    shape = PAPER_LAYERS[layer].with_batch(128)

    def a_load(config, channels_last=False):
        sites = access.model(config, shape, channels_last=channels_last)
        return next(s for s in sites if s.name.startswith("A ") and s.space == "global")

    fused = a_load(VARIANTS["sgemm_tile_fit_k_fused"], channels_last=True)
    assert fused.width == 16 and fused.sector_use == 32
    assert fused.sectors == a_load(VARIANTS["sgemm_tile_fit_k"]).sectors
    assert a_load(VARIANTS["sgemm_tile_fit_k_fused"]).width == 4


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize(
    "variant, twin", [("fused", "im2win"), ("sgemm_tile_fit_k_fused", "sgemm_tile_fit_k")]
)
def test_a_fused_main_loop_keeps_its_twins_ffma_and_shared_loads(arch, variant, twin):
    """The fused kernel's main loop (with its loads of x and the carry of its place in the
    reduction inside it, found as the smallest loop with the most FFMAs) holds its twin's FFMAs
    and float4 shared loads, touches no local memory, and the kernel never spills."""
    compiled = compile_cubin(VARIANTS[variant], arch)
    assert compiled.resources["im2win_conv"].spill_stores == 0
    try:
        mix, twin_mix = (
            sass.loop_mix(c.cubin) for c in (compiled, compile_cubin(VARIANTS[twin], arch))
        )
    except sass.DisassemblerUnavailable as exc:
        pytest.skip(str(exc))
    assert mix["ffma"] == twin_mix["ffma"] >= 512
    assert mix["shared_loads"] == twin_mix["shared_loads"]
    assert set(mix["widths"]["LDS"]) == {128} and mix["local_accesses"] == 0
