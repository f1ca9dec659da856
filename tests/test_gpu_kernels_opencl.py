"""The GPU kernels' own source, run on the CPU under OpenCL (PoCL), against the float64 oracle.

Every ablation variant, the papers' 12 layers (reduced) and random shapes. Skipped, with the reason,
where no OpenCL CPU device exists; .ci/run installs PoCL so that in CI they run.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from im2win.cuda import opencl
from im2win.cuda.config import VARIANTS, TileConfig
from im2win.reference import max_violation
from im2win.shapes import PAPER_LAYERS, ConvShape, reduced

from strategies import conv_shapes

try:
    DEVICE = opencl.device_name()
except opencl.OpenCLUnavailable as exc:
    pytest.skip(f"no OpenCL CPU device to emulate the GPU kernels: {exc}", allow_module_level=True)


def _check(x, w, b, stride, padding, config):
    out = opencl.conv2d(x, w, b, stride, padding, config)
    assert max_violation(out, x, w, b, stride, padding) <= 1.0


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_paper_layers_reduced(layer, variant):
    shape = reduced(PAPER_LAYERS[layer], n=2, max_out=5)
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    _check(x, w, torch.randn(shape.k), shape.stride, shape.padding, VARIANTS[variant])


@settings(max_examples=20, deadline=None)
@given(
    shape=conv_shapes(extra_w=(0, 4)),
    bias=st.booleans(),
    variant=st.sampled_from(list(VARIANTS)),
)
def test_random_shapes(shape, bias, variant):
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    b = torch.randn(shape.k) if bias else None
    _check(x, w, b, shape.stride, shape.padding, VARIANTS[variant])


def test_strided_input_view_and_unaligned_channels():
    base = torch.randn(2, 9, 12, 15)
    x = base[:, 1::2, :, 2:]  # storage offset, channel stride 2, non-contiguous
    w = torch.randn(70, 4, 3, 3)  # K = 70: neither a multiple of 4 nor of the 128-channel tile
    _check(x, w, torch.randn(70), 1, 1, VARIANTS["im2win"])


@pytest.mark.parametrize(
    "variant",
    [
        "im2win",
        "no_smem",
        "no_double_buffer",
        "no_micro_kernel",
        "async_copy",
        "async_copy_3_stages",
        "band",
        "sgemm_tile",
        "sgemm_tile_band",
        "wide_thread_tile",
        "fused",
        "sgemm_tile_fit_k_fused",
    ],
)
@pytest.mark.parametrize("split_k", [2, 3, 5])
def test_split_k(variant, split_k):
    """Slices of the reduction (T = 6*3*3 = 54 steps: BK-multiples, the last slice shorter, with
    bias only once), partial sums added by splitk_reduce; K not a multiple of 4."""
    x, w = torch.randn(2, 6, 7, 8), torch.randn(21, 6, 3, 3)
    config = VARIANTS[variant].replace(split_k=split_k)
    _check(x, w, torch.randn(21), 1, (1, 0), config)
    _check(x, w, None, 2, 0, config)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 12),
    k=st.integers(1, 40),
    r=st.integers(1, 5),
    s=st.integers(1, 12),
    sx=st.integers(1, 5),
    px=st.integers(0, 3),
    q=st.integers(1, 11),
    bk=st.sampled_from([1, 2, 4, 8]),
    tile=st.sampled_from([(128, 128, 8, 8), (64, 32, 4, 4), (32, 64, 4, 8)]),
    split_k=st.integers(0, 3),
)
def test_band_kernel_random_geometry(n, c, k, r, s, sx, px, q, bk, tile, split_k):
    """The window-band kernel: quads that end past Q (Q % 4 != 0), bands cut off by Wu, filters
    1-12 wide at column strides 1-5, step depths (capped by launch.band_depth), tiles whose quads
    span output rows and images, and split-K over r*C + c."""
    w_in = (q - 1) * sx + s - 2 * px
    if w_in < 1:
        return
    bm, bn, tm, tn = tile
    config = VARIANTS["band"].replace(bm=bm, bn=bn, tm=tm, tn=tn, bk=bk, split_k=split_k)
    x, w = torch.randn(n, c, r + 2, w_in), torch.randn(k, c, r, s)
    _check(x, w, torch.randn(k), (1, sx), (0, px), config)


def test_band_configuration_problems():
    band = VARIANTS["band"]
    assert not band.problems()
    assert "async_copy" in " ".join(band.replace(async_copy=True).problems())
    assert "multiples of 4" in " ".join(band.replace(tm=2, bm=64).problems())
    assert "bk=6" in " ".join(band.replace(bk=6).problems())


def test_wide_index_variant_and_automatic_choice():
    from im2win.cuda.launch import for_shape
    from im2win.shapes import ConvShape

    x, w = torch.randn(2, 6, 9, 9), torch.randn(10, 6, 3, 3)
    _check(x, w, None, 2, 1, VARIANTS["im2win"].replace(wide_index=True))
    _check(x, w, None, 2, 1, VARIANTS["band"].replace(wide_index=True))
    huge = ConvShape(n=128, c=64, h=224, w=224, k=64, r=7, s=7, stride=(1, 1))
    assert for_shape(VARIANTS["im2win"], huge).wide_index
    assert not for_shape(VARIANTS["im2win"], ConvShape(1, 3, 8, 8, 4, 3, 3)).wide_index


def test_launchable_configs_only():
    with pytest.raises(ValueError, match="threads"):
        opencl.conv2d(
            torch.randn(1, 1, 4, 4),
            torch.randn(1, 1, 3, 3),
            None,
            1,
            0,
            TileConfig(bm=256, bn=256, tm=2, tn=2),
        )


@settings(max_examples=15, deadline=None)
@given(shape=conv_shapes(c=(1, 20)))
def test_direct_kernel_random_shapes(shape):
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    b = torch.randn(shape.k)
    out = opencl.direct_conv2d(x, w, b, shape.stride, shape.padding, VARIANTS["im2win"])
    assert max_violation(out, x, w, b, shape.stride, shape.padding) <= 1.0


@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_direct_kernel_paper_layers_reduced(layer):
    shape = reduced(PAPER_LAYERS[layer], n=2, max_out=5)
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    out = opencl.direct_conv2d(x, w, None, shape.stride, shape.padding, VARIANTS["im2win"])
    assert max_violation(out, x, w, None, shape.stride, shape.padding) <= 1.0


@pytest.mark.parametrize(
    "variant",
    [
        "fit_k",
        "fit_k_no_double_buffer",
        "sgemm_tile_fit_k",
        "wide_thread_tile",
        "sgemm_tile_fit_k_fused",
        "wide_thread_tile_fused",
    ],
)
@pytest.mark.parametrize("k", [1, 21, 32, 33, 64, 65])
def test_tiles_fitted_to_the_output_channels(variant, k):
    """Tiles of 512 x 32 and 256 x 64 pixels x channels (512 x 64 in cuBLAS's tiling), several
    runs of A loads a thread, the last tile's pixels and channels cut off, split-K."""
    x, w = torch.randn(2, 5, 13, 11), torch.randn(k, 5, 3, 3)
    config = VARIANTS[variant]
    _check(x, w, torch.randn(k), 1, 1, config)
    _check(x, w, None, (2, 1), 0, config.replace(split_k=2))


@pytest.mark.parametrize(
    "n, c, h, w, r, stride, padding",
    [
        (1, 3, 5, 300, 3, (2, 1), (1, 2)),  # C = 3: 3 x 4 x 256 tiles, two of them across
        (2, 70, 6, 9, 3, 1, 1),  # C = 70: 3 x 128 x 16, channels cut off
        (2, 1, 7, 40, 3, (1, 3), (0, 1)),  # C = 1: one channel x 64 columns
        (3, 32, 4, 33, 3, 2, 0),  # exactly one tile of channels, columns past Wu
        (1, 300, 4, 5, 3, 1, 1),  # C = 300: tiles of 256 channels, the last cut off
        (1, 40, 31, 12, 30, 1, 0),  # 30 rows x 32 channels x 9 columns pass a block: rows tiled
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_window_transform_tiles(n, c, h, w, r, stride, padding, channels_last):
    """The window transform's tiles (launch.window_tile): channels below, at and above a tile's,
    window rows wider than a tile and rows split across blocks, padding, and input read along its
    innermost axis in either memory format."""
    x, wt = torch.randn(n, c, h, w), torch.randn(5, c, r, 3)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _check(x, wt, torch.randn(5), stride, padding, VARIANTS["im2win"])


ODD_WINDOWS = [(1, 1, 1), (1, 3000, 60), (5000, 3, 1), (40, 12, 30), (600, 100, 11)]  # C, W, R


def test_window_tiles_fit_their_block():
    """Every tile fits the block's shared memory in its layout, keeps at least 32 channels and 8
    columns where the layer has them, and takes all of a paper layer's window rows."""
    from im2win.cuda.launch import WINDOW_FLOATS, window_tile

    odd = [ConvShape(n=1, c=c, h=64, w=w, k=1, r=r, s=1) for c, w, r in ODD_WINDOWS]
    for shape in [*PAPER_LAYERS.values(), *odd]:
        for c_inner in (False, True):
            t = window_tile(shape, c_inner)
            last = (t.tw - 1) * t.w_pitch + (t.tr * t.tc - 1) * t.rc_pitch
            assert last < WINDOW_FLOATS and t.tr <= shape.r
            assert t.tc >= min(shape.c, 32) and t.tw >= min(shape.window_width, 8)
            assert t.tr == shape.r or shape in odd
    assert [(t.tr, t.tc, t.tw) for t in map(window_tile, PAPER_LAYERS.values())][::11] == [
        (11, 4, 128),  # conv1
        (3, 256, 8),  # conv12
    ]


@pytest.mark.parametrize(
    "config",
    [
        VARIANTS["im2win"].replace(bk=16),
        VARIANTS["im2win"].replace(bk=16, async_copy=True),
        VARIANTS["im2win"].replace(bk=16, double_buffer=False),
        VARIANTS["wide_thread_tile"].replace(bk=16),
        TileConfig(bm=64, bn=64, bk=16, tm=4, tn=4, wide_index=False),
        VARIANTS["fused"].replace(bk=16),
    ],
    ids=["default", "async_copy", "no_double_buffer", "wide_thread_tile", "64x64_4x4", "fused"],
)
def test_sixteen_deep_steps(config):
    """BK = 16, its A runs in two rounds of the tile's rows: reductions that end mid-step and
    mid-run, C not a multiple of 4 (scalar loads), split-K."""
    x, w = torch.randn(2, 7, 9, 10), torch.randn(40, 7, 3, 3)
    _check(x, w, torch.randn(40), 1, 1, config)
    _check(x, w, None, (2, 1), 0, config.replace(split_k=2))
    x, w = torch.randn(1, 16, 6, 6), torch.randn(64, 16, 2, 2)
    _check(x, w, torch.randn(64), 1, 0, config)


@pytest.mark.parametrize("variant", ["fused", "sgemm_tile_fit_k_fused", "wide_thread_tile_fused"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "view"])
@pytest.mark.parametrize("c", [3, 8, 1])
def test_fused_kernels_read_the_input_in_every_layout(variant, layout, c):
    """The window transform fused into the convolution reads x through its strides: NCHW,
    channels_last (float4 loads where C % 4 == 0) and a view with a storage offset and a channel
    stride; each value's place apart (C = 3, 1) or 4 channels of one (r, s) (C = 8); zero padding
    at every side, both strides, K not a multiple of 4."""
    base = torch.randn(2, 2 * c, 15, 16)
    x = {
        "nchw": base[:, :c].contiguous(),
        "channels_last": base[:, :c].contiguous(memory_format=torch.channels_last),
        "view": base[:, 1::2, 1:, 3:],
    }[layout]
    w = torch.randn(21, c, 4, 3)
    _check(x, w, torch.randn(21), (2, 1), (2, 1), VARIANTS[variant])
    _check(x, w, None, (1, 3), (0, 2), VARIANTS[variant])


@pytest.mark.parametrize("rows", [False, True], ids=["window", "window_rows"])
@pytest.mark.parametrize(
    "n, c, h, w, r, s, stride, padding",
    [
        (2, 3, 23, 29, 11, 11, (4, 4), (2, 2)),  # conv1's C, R and stride
        (1, 32, 15, 17, 7, 7, (2, 2), (3, 3)),  # conv4's
        (2, 70, 6, 9, 3, 3, 1, 1),  # channel tiles, the last cut off
        (1, 300, 4, 5, 3, 3, 1, 1),
        (1, 40, 31, 12, 30, 1, 1, 0),  # window rows split across blocks
        (3, 1, 7, 40, 3, 2, (1, 3), (0, 1)),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_both_window_kernels_build_the_window_tensor(
    n, c, h, w, r, s, stride, padding, channels_last, rows
):
    """im2win_window and im2win_window_rows (the kernel up to c72bc28, timed beside it in the GPU
    run) each build exactly the window tensor of the CPU transform."""
    from im2win.transform import window_nhwc

    x = torch.randn(n, c, h, w)
    pair = [(v, v) if isinstance(v, int) else v for v in (stride, padding)]
    shape = ConvShape.of(x, torch.empty(2, c, r, s), *pair)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(opencl.window_transform(x, shape, rows), window_nhwc(x, shape))
