"""im2win on a real NVIDIA GPU through cuda.core: correctness and input checks.

Marked `gpu`: skipped with the reason where torch sees no CUDA device (conftest.py).
"""

import pytest
import torch

import im2win
from im2win.cuda.config import VARIANTS
from im2win.reference import max_violation
from im2win.shapes import PAPER_LAYERS, reduced

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("impl", ["im2win", "direct", "im2col_gemm", "im2col_gemm_loop", "torch"])
@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_paper_layers_on_gpu(layer, impl):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    shape = reduced(PAPER_LAYERS[layer], n=2, max_out=9)
    x, w, b = (torch.randn(s) for s in (shape.input_shape(), shape.weight_shape(), (shape.k,)))
    out = im2win.conv2d(x.cuda(), w.cuda(), b.cuda(), shape.stride, shape.padding, impl=impl)
    assert max_violation(out.cpu(), x, w, b, shape.stride, shape.padding) <= 1.0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_on_gpu(variant):
    from im2win.cuda.runtime import conv2d

    x, w = torch.randn(2, 13, 17, 15), torch.randn(70, 13, 3, 5)
    out = conv2d(x.cuda(), w.cuda(), None, (2, 1), (1, 2), VARIANTS[variant])
    assert max_violation(out.cpu(), x, w, None, (2, 1), (1, 2)) <= 1.0


@pytest.mark.parametrize("split_k", [0, 1, 3])
def test_split_k_on_gpu(split_k):
    """A late layer at batch 8 has 8 tiles of 128 x 128: split automatically (0) across the SMs,
    not at all (1), or in 3 slices; all match the oracle, the bias counted once."""
    from im2win.cuda.runtime import conv2d, slices_for
    from im2win.shapes import ConvShape

    shape = ConvShape(8, 512, 7, 7, 512, 3, 3)
    config = VARIANTS["im2win"].replace(split_k=split_k)
    assert (slices_for(shape, torch.cuda.current_device(), config) > 1) == (split_k != 1)
    x, w, b = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape()), torch.randn(512)
    out = conv2d(x.cuda(), w.cuda(), b.cuda(), (1, 1), (0, 0), config)
    assert max_violation(out.cpu(), x, w, b, (1, 1), (0, 0)) <= 1.0


@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_band_kernel_on_the_paper_layers_on_gpu(layer, split_k):
    """The window-band kernel compiled for each layer's filter width and stride (11/4, 7/2, 5/1,
    3/1), whole and in 3 slices of r*C + c, on more than one block of quads (Q % 4 != 0)."""
    from im2win.cuda.runtime import conv2d

    shape = reduced(PAPER_LAYERS[layer], n=3, max_out=11)
    x, w, b = (torch.randn(s) for s in (shape.input_shape(), shape.weight_shape(), (shape.k,)))
    config = VARIANTS["band"].replace(split_k=split_k)
    out = conv2d(x.cuda(), w.cuda(), b.cuda(), shape.stride, shape.padding, config)
    assert max_violation(out.cpu(), x, w, b, shape.stride, shape.padding) <= 1.0


def test_mixed_devices_and_cpu_only_impls_are_clear_errors():
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="different devices"):
        im2win.conv2d(x.cuda(), w)
    with pytest.raises(ValueError, match="CPU only"):
        im2win.conv2d(x.cuda(), w.cuda(), impl="im2win_nchw")


def test_unlaunchable_tile_is_a_clear_error():
    from im2win.cuda.config import TileConfig
    from im2win.cuda.runtime import conv2d

    x, w = torch.randn(1, 3, 8, 8).cuda(), torch.randn(4, 3, 3, 3).cuda()
    with pytest.raises(ValueError, match="shared memory"):
        conv2d(x, w, None, (1, 1), (0, 0), TileConfig(bm=512, bn=512, bk=32, tm=16, tn=16))


def test_every_cudnn_engine_runs_or_says_why():
    from im2win.cuda import cudnn_engines

    torch.backends.cudnn.allow_tf32 = False
    x, w = torch.randn(2, 16, 12, 12), torch.randn(32, 16, 3, 3)
    try:
        found = cudnn_engines.engines(x.cuda(), w.cuda(), (1, 1), (1, 1))
    except cudnn_engines.CudnnFrontendUnavailable as exc:
        pytest.skip(str(exc))
    assert found
    ran = [e for e in found if e.run is not None]
    assert ran and all(e.reason for e in found if e.run is None)
    for e in ran:  # an engine either computes in FP32 or is TF32 (a larger error, still close)
        out = e.run().cpu()
        assert max_violation(out, x, w, None, 1, 1) <= 1.0 or torch.allclose(
            out, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-1
        )


def test_the_phases_of_one_call_are_its_kernels():
    """conv2d's events bracket each launch: the window transform, the filter reorder, the
    convolution and, where the layer splits, split-K's sum; their times add up to no more than
    the whole call's, and the output is the same as without events."""
    from harness.timing import measure_cuda, measure_cuda_phases
    from im2win.cuda.runtime import conv2d

    x, w = torch.randn(2, 16, 12, 12).cuda(), torch.randn(24, 16, 3, 3).cuda()
    config = VARIANTS["im2win"].replace(split_k=2)
    events = []
    out = conv2d(x, w, None, (1, 1), (1, 1), config, events=events)
    assert [e[0] for e in events] == [
        "im2win_window",
        "im2win_filter",
        "im2win_conv",
        "splitk_reduce",
    ]
    assert torch.equal(out, conv2d(x, w, None, (1, 1), (1, 1), config))
    phases = measure_cuda_phases(
        lambda ev: conv2d(x, w, None, (1, 1), (1, 1), config, events=ev), 1, 5
    )
    whole = measure_cuda(lambda: conv2d(x, w, None, (1, 1), (1, 1), config), 1, 5).min_ms
    assert set(phases) == {e[0] for e in events} and all(v > 0 for v in phases.values())
    assert sum(phases.values()) <= whole * 1.5


@pytest.mark.parametrize("channels_last", [False, True])
def test_planned_calls_on_gpu(channels_last):
    """runtime.conv2d from its plan: the same shape again, with the bias and without it, in either
    memory format (the window transform reads channels_last along c), each call right."""
    from im2win.cuda import runtime

    x, w, b = torch.randn(2, 3, 37, 45), torch.randn(8, 3, 11, 11), torch.randn(8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    hits = runtime._plan.cache_info().hits
    for bias in (b, None, b, None):
        out = runtime.conv2d(
            x.cuda(), w.cuda(), None if bias is None else bias.cuda(), (4, 4), (2, 2)
        )
        assert max_violation(out.cpu(), x, w, bias, (4, 4), (2, 2)) <= 1.0
    assert runtime._plan.cache_info().hits >= hits + 2


@pytest.mark.parametrize("rows", [False, True], ids=["window", "window_rows"])
@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_both_window_kernels_on_gpu(layer, rows):
    """im2win_window and im2win_window_rows (timed beside it in the GPU run) build exactly the CPU
    transform's window tensor on every paper layer's geometry (reduced)."""
    from im2win.cuda.runtime import window_transform
    from im2win.transform import window_nhwc

    shape = reduced(PAPER_LAYERS[layer], n=2, max_out=9)
    x = torch.randn(shape.input_shape())
    got = window_transform(x.cuda(), shape, rows)
    assert torch.equal(got.cpu(), window_nhwc(x, shape))


@pytest.mark.parametrize("variant", ["fused", "sgemm_tile_fit_k_fused", "wide_thread_tile_fused"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "unaligned"])
@pytest.mark.parametrize("layer", ["conv1", "conv4", "conv10"])
def test_fused_kernels_on_the_paper_layers_on_gpu(layer, layout, variant):
    """The window transform fused into the convolution on three paper layers' geometry (reduced:
    C = 3 at stride 4, a 7 x 7 filter at stride 2, C % 4 == 0; PoCL runs all of them): x NCHW,
    channels_last (float4 loads where C % 4 == 0) and channels_last starting 4 bytes past 16-byte
    alignment (its loads then scalar); no window tensor allocated."""
    from im2win.cuda import runtime

    shape = reduced(PAPER_LAYERS[layer], n=2, max_out=9)
    x, w, b = (torch.randn(s) for s in (shape.input_shape(), shape.weight_shape(), (shape.k,)))
    xg = x.cuda()
    if layout != "nchw":
        xg = xg.contiguous(memory_format=torch.channels_last)
    if layout == "unaligned":
        storage = torch.empty(xg.numel() + 1, device="cuda")
        xg = storage[1:].as_strided(xg.shape, xg.stride()).copy_(xg)
    config = VARIANTS[variant]
    index = torch.cuda.current_device()
    assert runtime.plan(shape, xg.stride(), True, index, config).window_elems == 0
    out = runtime.conv2d(xg, w.cuda(), b.cuda(), shape.stride, shape.padding, config)
    assert max_violation(out.cpu(), x, w, b, shape.stride, shape.padding) <= 1.0
