"""Every implementation against the float64 oracle: the papers' layers and random shapes."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import im2win
from harness import timing
from im2win.reference import max_violation
from im2win.shapes import PAPER_LAYERS, reduced
from im2win.transform import window_nchw, window_nhwc

from strategies import conv_shapes

IMPLS = list(im2win.IMPLEMENTATIONS)


def _check(impl, x, w, b, stride, padding):
    out = im2win.conv2d(x, w, b, stride, padding, impl=impl)
    assert out.dtype == torch.float32
    assert max_violation(out, x, w, b, stride, padding) <= 1.0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_paper_layers_reduced(layer, impl):
    shape = reduced(PAPER_LAYERS[layer], n=2)
    x = torch.randn(shape.input_shape())
    w = torch.randn(shape.weight_shape())
    b = torch.randn(shape.k)
    _check(impl, x, w, b, shape.stride, shape.padding)


@settings(max_examples=25, deadline=None)
@given(
    shape=conv_shapes(n=(0, 4), c=(1, 70), rs=(1, 11), extra_w=(0, 13)),  # n = 0: F.conv2d allows
    bias=st.booleans(),
    impl=st.sampled_from(IMPLS),
)
def test_random_shapes(shape, bias, impl):
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    _check(impl, x, w, torch.randn(shape.k) if bias else None, shape.stride, shape.padding)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch_gives_an_empty_output(impl):
    x, w = torch.randn(0, 3, 8, 8), torch.randn(4, 3, 3, 3)
    out = im2win.conv2d(x, w, impl=impl)  # was an integer division by zero in the kernel
    assert out.shape == torch.nn.functional.conv2d(x, w).shape == (0, 4, 6, 6)


def test_network_forms_are_timed_on_channels_last_tensors_made_before_the_call():
    """torch_cl_net and im2win_packed are oneDNN and im2win as a channels_last network runs them:
    the reproduction (and the benchmarks) hand them channels_last input and filter made outside
    the timed call, so no reorder is in their time; every other implementation gets the caller's
    tensors as they are."""
    from reproductions.im2win_cpu import _call

    shape = reduced(PAPER_LAYERS["conv9"], n=2)
    x, w, b = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape()), None
    cl = torch.channels_last
    assert im2win.IMPLEMENTATIONS["torch_cl_net"].memory_format == cl
    for impl in im2win.IMPLEMENTATIONS:
        call = _call(impl, x, w, b, shape)
        xa, wa = call.args[:2]
        if impl in ("torch_cl_net", "im2win_packed"):
            assert xa.is_contiguous(memory_format=cl) and wa.is_contiguous(memory_format=cl)
        else:
            assert xa is x and wa is w
        assert max_violation(call(), x, w, b, shape.stride, shape.padding) <= 1.0


@pytest.mark.parametrize("threads", [1, 2])
def test_plan_queries_of_an_empty_batch(threads):
    """The kernels' plans (workspace, path, output stores) of an empty batch: an answer, not a
    division by zero that kills the process (the streamed plan's row blocks)."""
    from im2win.plan import im2win_workspace_floats, streams_output, streams_windows

    for k in (4, 64, 512):
        shape = im2win.ConvShape(n=0, c=256, h=8, w=8, k=k, r=3, s=3)
        assert im2win_workspace_floats(shape, threads) >= 0
        assert not streams_windows(shape, threads) and not streams_output(shape, threads)


@pytest.mark.parametrize("transform", ["nhwc", "nchw"])
def test_window_transforms_of_an_empty_batch(transform):
    from im2win.shapes import ConvShape

    shape = ConvShape(n=0, c=3, h=8, w=8, k=4, r=3, s=3)
    assert im2win.WINDOW_TRANSFORMS[transform](torch.randn(0, 3, 8, 8), shape).numel() == 0


@pytest.mark.parametrize("c", [16, 17, 40])
@pytest.mark.parametrize("stride, padding", [((1, 1), (0, 0)), ((2, 3), (1, 2))])
def test_long_rows_with_many_channels(c, stride, padding):
    """Window bands of NCHW rows (>= 8 columns, >= 16 channels) are built by 8 x 8 register
    transposes plus scalar edges, not the per-column gather the other shapes use."""
    x, w = torch.randn(2, c, 6, 150), torch.randn(9, c, 3, 5)
    _check("im2win", x, w, torch.randn(9), stride, padding)
    _check("im2win", x[:, :, :, 1:], w, None, stride, padding)  # a row that is not aligned


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_and_channels_last_inputs(impl):
    base = torch.randn(2, 10, 9, 16)
    sliced = base[:, ::2, :, 1::2]  # strided view in C and W
    assert not sliced.is_contiguous()
    w = torch.randn(6, 5, 3, 3)
    _check(impl, sliced, w, None, 1, 1)
    cl = torch.randn(2, 5, 9, 8).contiguous(memory_format=torch.channels_last)
    _check(impl, cl, w, torch.randn(6), (2, 1), (0, 2))
    wt = torch.randn(5, 6, 3, 3).transpose(0, 1)  # non-contiguous weight
    _check(impl, cl, wt, None, 1, 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_batch1_k_not_multiple_of_tile(impl):
    x = torch.randn(1, 3, 30, 29)
    w = torch.randn(37, 3, 5, 4)  # K = 37: a partial channel block
    _check(impl, x, w, torch.randn(37), (3, 2), (2, 1))


@pytest.mark.parametrize("impl", IMPLS)
def test_same_result_with_one_thread(impl):
    x, w = torch.randn(2, 8, 12, 12), torch.randn(16, 8, 3, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = im2win.conv2d(x, w, impl=impl)
    finally:
        torch.set_num_threads(old)
    assert torch.allclose(one, im2win.conv2d(x, w, impl=impl), rtol=1e-5, atol=1e-5)


def test_window_transforms_match_their_definitions():
    x = torch.randn(2, 3, 7, 9)
    shape = im2win.ConvShape.of(x, torch.empty(4, 3, 3, 2), (2, 3), (1, 2))
    xp = torch.nn.functional.pad(x, (2, 2, 1, 1))
    nhwc, nchw = window_nhwc(x, shape), window_nchw(x, shape)
    for p in range(shape.p):
        for wcol in range(shape.window_width):
            for r in range(shape.r):
                want = xp[:, :, p * 2 + r, wcol]
                assert torch.equal(nhwc[:, p, wcol, r, :], want)
                assert torch.equal(nchw[:, :, p, wcol * shape.r + r], want)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_window_in_channel_blocks_is_the_window_of_each_block(layout):
    """window_nhwc in blocks of 8 channels: block b is the NHWC window of channels 8b .. 8b + 7."""
    x = torch.randn(2, 24, 7, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    shape = im2win.ConvShape.of(x, torch.empty(4, 24, 3, 2), (2, 1), (1, 2))
    whole, blocked = window_nhwc(x, shape), window_nhwc(x, shape, 8)
    assert blocked.shape == (2, shape.p, 3, shape.window_width, shape.r, 8)
    for b in range(3):
        assert torch.equal(blocked[:, :, b], whole[..., 8 * b : 8 * b + 8])
    for bad in (16, 0, -8, 48):
        with pytest.raises(ValueError, match="does not divide"):
            window_nhwc(x, shape, bad)


@pytest.mark.parametrize("level", ["native", "x86-64-v3", "x86-64-v2"])
def test_window_written_past_the_caches_is_the_same_window(level):
    """Where every thread will read the whole window tensor (shared) and the two threads' cores
    share no last-level cache, the transform writes it with non-temporal stores, each row built
    whole (transpose_rows_stream). -DIM2WIN_APART=1 takes that placement on any host: the window
    must equal the one written as in cache (-DIM2WIN_APART=0), bit for bit. Blocks of 16 and 32
    channels, padding on both axes, a row stride, 13 and 11 columns (the last 8 columns again
    over the last full tile), 6 columns (too few to transpose 8 at a time), a view whose columns
    are not contiguous and channels_last input (neither streamed); AVX-512, AVX2 and SSE code
    (SSE never streams) where this CPU runs them."""
    from im2win import cpu
    from im2win.cpu import levels

    if level != "native" and not levels.runs_here(level):
        pytest.skip(f"this CPU does not run {level} code")
    torch.manual_seed(0)
    cases = [  # (x, (R, S), stride, padding, blocks)
        (torch.randn(2, 32, 9, 13), (3, 3), (1, 1), (1, 2), (16, 32)),
        (torch.randn(3, 48, 11, 11), (3, 2), (2, 1), (0, 0), (16, 48)),
        (torch.randn(2, 16, 8, 6), (3, 3), (1, 1), (1, 1), (16,)),
        (torch.randn(2, 32, 9, 26)[..., ::2], (3, 3), (1, 1), (0, 1), (32,)),
        (
            torch.randn(2, 32, 9, 13).contiguous(memory_format=torch.channels_last),
            (3, 3),
            (1, 1),
            (1, 0),
            (16, 32),
        ),
    ]
    windows = {}
    with timing.threads(2):
        for placement in ("IM2WIN_APART=0", "IM2WIN_APART=1"):
            with cpu.kernels_from(cpu.SOURCE, level, (placement,)):
                for i, (x, (r, s), stride, padding, blocks) in enumerate(cases):
                    w = torch.empty(64, x.shape[1], r, s)
                    shape = im2win.ConvShape.of(x, w, stride, padding)
                    for block in blocks:
                        got = window_nhwc(x, shape, block, shared=True)
                        windows.setdefault((i, block), []).append(got)
    for (i, block), (in_cache, streamed) in windows.items():
        assert torch.equal(in_cache, streamed), (level, i, block)


@pytest.mark.parametrize("impl", ["im2win", "im2win_nhwc"])
def test_im2win_on_a_window_written_past_the_caches_matches_the_oracle(impl):
    """conv6 at batch 4 (im2win's one paper layer on the whole window tensor, on every CPU timed)
    and a smaller deep layer with padding, on two threads: few pixels, one block of them, so each
    thread convolves a share of the output channels over the whole window tensor (window_shared),
    which the transform streams where the threads sit apart (-DIM2WIN_APART=1 takes that
    placement on any host). im2win takes the whole window tensor for the second where the host's
    caches make it (its path is asserted for conv6 only)."""
    from im2win import cpu
    from im2win.implementations import im2win_with_phases
    from im2win.plan import WHOLE
    from im2win.transform import window_shared

    torch.manual_seed(0)
    with timing.threads(2), cpu.kernels_from(cpu.SOURCE, "native", ("IM2WIN_APART=1",)):
        for x_shape, w_shape, padding in [
            ((4, 256, 12, 12), (512, 256, 3, 3), (0, 0)),
            ((2, 128, 9, 11), (128, 128, 3, 3), (1, 1)),
        ]:
            x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
            shape = im2win.ConvShape.of(x, w, (1, 1), padding)
            assert window_shared(shape, 2), x_shape
            if impl == "im2win":
                out, phases = im2win_with_phases(x, w, b, (1, 1), padding)
                assert phases["path"] == WHOLE or x_shape[1] != 256, x_shape
            else:
                out = im2win.conv2d(x, w, b, 1, padding, impl=impl)
            assert max_violation(out, x, w, b, (1, 1), padding) <= 1.0, x_shape


@pytest.mark.parametrize(
    "c, k, r, s, stride, padding",
    [
        (64, 256, 3, 3, (1, 1), (1, 1)),  # 32-channel blocks on AVX2
        (96, 20, 3, 3, (2, 1), (0, 1)),  # K not a multiple of the register block
        (16, 130, 4, 4, (1, 2), (2, 0)),  # 8-channel blocks of a 4 x 4 filter
        (512, 40, 3, 3, (1, 1), (0, 0)),  # conv12's depth
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_im2win_window_in_channel_blocks(c, k, r, s, stride, padding, threads):
    """Few pixels and a deep filter: the materialised window in blocks of channels, each block's
    panel packed from the filter's own order (gemm_block_taps)."""
    from im2win.plan import streams_windows
    from im2win.transform import window_block

    x, w = torch.randn(1, c, 7, 8), torch.randn(k, c, r, s)
    shape = im2win.ConvShape.of(x, w, stride, padding)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert not streams_windows(shape, threads) and window_block(shape, threads) < c
        _check("im2win", x, w, torch.randn(k), stride, padding)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize(
    "n, c, h, w, k, r, stride, padding",
    [
        (4, 512, 7, 7, 512, 3, (1, 1), (0, 0)),  # conv12 at batch 4: 128-channel planes
        (2, 64, 9, 11, 256, 3, (2, 1), (1, 0)),  # strides and padding per axis
        (3, 96, 6, 5, 200, 3, (1, 1), (1, 1)),  # K not a multiple of the register block
        (1, 512, 7, 8, 40, 3, (1, 1), (0, 0)),  # two channel blocks: one a thread
        (1, 48, 5, 5, 300, 2, (1, 1), (0, 0)),  # an even filter
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_im2win_window_planes_a_thread(n, c, h, w, k, r, stride, padding, threads):
    """Few pixels and a deep filter that the whole window tensor would leave room for only the
    narrowest panels: each thread builds the window of a block of channels at a time for itself
    and convolves its share of the output channels (im2win_conv_planes), within half of the im2col
    matrix. The same as the oracle, for every shape and thread count that takes the path."""
    from im2win.implementations import im2win_with_phases
    from im2win.metrics import im2col_elems
    from im2win.plan import im2win_workspace_floats, window_planes

    x, wt, b = torch.randn(n, c, h, w), torch.randn(k, c, r, r), torch.randn(k)
    shape = im2win.ConvShape.of(x, wt, stride, padding)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        planes = window_planes(shape, threads)
        out, phases = im2win_with_phases(x, wt, b, stride, padding)
        assert max_violation(out, x, wt, b, stride, padding) <= 1.0
        if planes:
            assert phases["path"] == "window planes a thread" and c % planes == 0 and planes < c
            assert im2win_workspace_floats(shape, threads) <= im2col_elems(shape) / 2
        else:
            assert phases["path"] != "window planes a thread"
    finally:
        torch.set_num_threads(old)
    if (n, c, k, threads) == (4, 512, 512, 2):  # the layer the path is for
        assert planes == 128


def test_window_planes_only_where_the_whole_window_starves_the_panels():
    """conv6 at batch 4: the room beside its whole window tensor allows 128-channel panels, and
    the planes ran 0.98-1.00x there (see im2win_planes_plan): it keeps the whole window tensor."""
    from im2win.plan import window_planes
    from im2win.transform import window_block

    shape = PAPER_LAYERS["conv6"].with_batch(4)
    assert window_planes(shape, 2) == 0 and window_block(shape, 2) == 128


@pytest.mark.parametrize("threads", [1, 2])
def test_window_blocks_grow_into_the_memory_room(threads):
    """Where the memory goal leaves room beside the window tensor, its channel blocks (and their
    filter panels) are larger than the kernel's PANEL_FLOATS allows, and the workspace stays
    within half of the im2col matrix."""
    from im2win.cpu import lib
    from im2win.metrics import im2col_elems
    from im2win.plan import im2win_workspace_floats, streams_windows
    from im2win.transform import window_block

    shape = im2win.ConvShape(n=2, c=256, h=12, w=12, k=128, r=3, s=3)
    m = shape.n * shape.p * shape.q
    im2col = m * shape.c * shape.r * shape.s  # a window this large leaves no room: PANEL_FLOATS
    least = lib().im2win_window_block(shape.k, shape.c, shape.r, shape.s, m, im2col, 1)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert not streams_windows(shape, threads)
        assert least < window_block(shape, threads) < shape.c
        assert im2win_workspace_floats(shape, threads) <= im2col_elems(shape) / 2
        x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
        _check("im2win", x, w, torch.randn(shape.k), shape.stride, shape.padding)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
def test_im2win_streamed_and_whole_window_paths(threads):
    from im2win.plan import streams_windows

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        big = im2win.ConvShape(n=2, c=8, h=40, w=40, k=40, r=3, s=3, padding=(1, 1))
        small = im2win.ConvShape(n=1, c=64, h=5, w=5, k=64, r=3, s=3)
        assert streams_windows(big, threads) and not streams_windows(small, threads)
        for shape in (big, small):
            x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
            _check("im2win", x, w, torch.randn(shape.k), shape.stride, shape.padding)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
def test_im2win_output_streamed_to_memory(threads):
    """A short reduction with an output larger than the L2 caches: the output tiles go to memory
    with non-temporal stores, on both paths, with and without bias; so does a reduction longer
    than a panel over the filter packed once (one micro-kernel call: each tile written once); K
    that is not a multiple of the vector keeps plain stores. Built with -DIM2WIN_STREAM_L2 (AMD's
    rule on any vendor), so that the streamed stores run on any host; Intel's streams only
    outputs past a quarter of the last-level cache (the test after this one)."""
    from im2win import cpu
    from im2win.plan import filter_packed_once, streams_output

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with cpu.kernels_from(cpu.SOURCE, "native", ("IM2WIN_STREAM_L2=1",)):
            shape = im2win.ConvShape(n=2, c=3, h=190, w=190, k=64, r=3, s=3, padding=(1, 1))
            odd = dataclasses.replace(shape, k=60)
            deep = im2win.ConvShape(n=2, c=32, h=130, w=130, k=64, r=3, s=3)  # T = 288 > TC
            assert streams_output(shape, threads) and not streams_output(odd, threads)
            assert filter_packed_once(deep) and streams_output(deep, threads)
            for s in (shape, odd, deep):
                x, w = torch.randn(s.input_shape()), torch.randn(s.weight_shape())
                for impl, b in (("im2win", torch.randn(s.k)), ("im2win_nhwc", None)):
                    _check(impl, x, w, b, s.stride, s.padding)
    finally:
        torch.set_num_threads(old)


def test_intel_streams_only_outputs_past_a_quarter_of_the_last_level_cache():
    """Intel's rule with AVX-512 (-DIM2WIN_INTEL=1): plain stores into an output within a quarter
    of the last-level cache (sysconf), whose lines are mostly still there from the buffer's last
    use, or a sixteenth for reductions of 512 steps or more; non-temporal ones past it; and where
    the system does not say, the L2 rule AMD's cores and the AVX2 code use."""
    import shutil
    import subprocess

    from im2win import cpu
    from im2win.cpu import levels
    from im2win.plan import streams_output

    conv7 = PAPER_LAYERS["conv7"]  # T = 27: one micro-kernel call; 64 x 222 x 222 floats an image
    if levels.runs_here("x86-64-v3"):  # the AVX2 code: half a core's L2
        with cpu.kernels_from(cpu.SOURCE, "x86-64-v3", ("IM2WIN_INTEL=1",)):
            assert streams_output(conv7.with_batch(1), 2)
    if not levels.runs_here("x86-64-v4"):
        pytest.skip("this CPU does not run AVX-512 code")
    if not shutil.which("getconf"):
        pytest.skip("no getconf to read the last-level cache's size with")
    said = subprocess.run(["getconf", "LEVEL3_CACHE_SIZE"], capture_output=True, text=True).stdout
    llc = int(said) if said.strip().isdigit() else 0  # Python's os.sysconf does not know the name
    image_bytes = 4 * conv7.k * conv7.p * conv7.q
    with cpu.kernels_from(cpu.SOURCE, "x86-64-v4", ("IM2WIN_INTEL=1",)):
        if llc <= 0:  # half a core's L2 cache, as on AMD
            assert streams_output(conv7.with_batch(1), 2)
            return
        fits = llc // 4 // image_bytes  # images whose output fits in a quarter of the cache
        assert streams_output(conv7.with_batch(fits + 1), 2)
        if fits:
            assert not streams_output(conv7.with_batch(fits), 2)
        conv9 = PAPER_LAYERS["conv9"]  # T = 576: a sixteenth of the cache
        fits = llc // 16 // (4 * conv9.k * conv9.p * conv9.q)
        assert streams_output(conv9.with_batch(fits + 1), 2)
        if fits:
            assert not streams_output(conv9.with_batch(fits), 2)


@pytest.mark.parametrize(
    "shape, plan",
    [
        (im2win.ConvShape(n=2, c=8, h=40, w=40, k=40, r=3, s=3, padding=(1, 1)), "streamed"),
        # the bands of the two threads' items hold all of the window: streamed, not the whole
        # window tensor in the same memory (was the whole window before)
        (im2win.ConvShape(n=1, c=64, h=14, w=14, k=16, r=3, s=3), "streamed"),
        (im2win.ConvShape(n=1, c=128, h=28, w=28, k=128, r=3, s=3), "streamed"),  # conv10, batch 1
        # 3 output rows in items of 2 a thread: the bands would take more than the window
        (im2win.ConvShape(n=1, c=64, h=5, w=60, k=16, r=3, s=3), "whole, packed once"),
        (im2win.ConvShape(n=1, c=4, h=40, w=40, k=800, r=3, s=3), "whole, panels"),  # K > M / 2
        # a reduction longer than one micro-kernel call takes from the filter packed once, over
        # rows whose whole window outgrows two threads' bands on any L2 up to 16 MB (at 14 x 14 it
        # took the whole window on a 2 MB L2)
        (im2win.ConvShape(n=1, c=600, h=40, w=40, k=20, r=3, s=3, padding=(1, 1)), "streamed"),
        (im2win.ConvShape(n=1, c=64, h=5, w=5, k=64, r=3, s=3), "whole, panels"),
        # M / 4 < K <= M / 2 (M = 196): the filter packed once, bands of 2+ rows in the room left
        (im2win.ConvShape(n=1, c=64, h=16, w=16, k=64, r=3, s=3), "streamed"),
    ],
)
def test_im2win_plans(shape, plan):
    """Each plan is taken where it should be and matches the oracle: window bands streamed (only
    with the filter packed once: every band block would pack it again), or the whole window
    tensor with the filter packed once (K <= M / 4) or panel by panel (a late layer's filter
    outgrows its im2col matrix)."""
    from im2win.plan import filter_packed_once, fused_packs_filter_once, streams_windows

    old = torch.get_num_threads()
    torch.set_num_threads(2)  # the plans are the two-thread ones
    try:
        streamed = streams_windows(shape, 2)
        packed = filter_packed_once(shape)
        taken = "streamed" if streamed else "whole, packed once" if packed else "whole, panels"
        assert taken == plan
        assert fused_packs_filter_once(shape, 2) or not streamed
        x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
        _check("im2win", x, w, torch.randn(shape.k), shape.stride, shape.padding)
        _check("im2win_nhwc", x, w, None, shape.stride, shape.padding)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_bands_with_the_filter_in_panels(threads):
    """The streamed kernel where its plan does not pack the whole filter once (K > M / 2: im2win
    then takes the whole window tensor instead), called directly: the filter goes panel by panel
    into every work item, each thread its own panel."""
    from im2win.plan import fused_plan
    from im2win.streamed import convolve_fused

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        shape = im2win.ConvShape(n=2, c=24, h=7, w=9, k=70, r=3, s=2, padding=(1, 0))
        work_floats, packs_once = fused_plan(shape, threads)
        assert not packs_once
        x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
        for b in (None, torch.randn(shape.k)):
            out, _ = convolve_fused(x, shape, w, b, work_floats)
            assert max_violation(out, x, w, b, shape.stride, shape.padding) <= 1.0
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize(
    "c, k, rs, stride",
    [
        (50, 20, 3, 1),
        (64, 16, 3, 2),
        (200, 24, 1, 1),
        (40, 33, 4, 1),
        (30, 17, 5, 1),
        (400, 20, 3, 1),
        (193, 9, 2, 2),
    ],
)
def test_im2win_filter_panels_with_few_pixels(c, k, rs, stride):
    """Few pixels, so the filter is packed panel by panel in every work item: panels that end
    inside a tap's channels, a 1x1 filter, K not a multiple of the register block, 4x4 and 5x5
    taps; more channels than a panel is deep (C > 192)."""
    x, w = torch.randn(1, c, 6, 7), torch.randn(k, c, rs, rs)
    for impl in ("im2win", "im2win_nhwc"):
        _check(impl, x, w, torch.randn(k), (stride, stride), (1, 0))


@pytest.mark.parametrize("c", [3, 5, 16])
@pytest.mark.parametrize("stride, padding", [((1, 1), (0, 0)), ((2, 1), (2, 1)), ((3, 2), (1, 0))])
def test_band_rows_taken_from_the_previous_row(c, stride, padding):
    """Streamed bands of several output rows per block reuse the window rows the previous output
    row of the same image holds (stride < R), across padding rows and image boundaries."""
    from im2win.plan import streams_windows

    shape = im2win.ConvShape(3, c, 64, 57, 20, 5, 3, stride, padding)
    assert streams_windows(shape, torch.get_num_threads())
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    _check("im2win", x, w, torch.randn(20), stride, padding)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("c", [3, 16])
@pytest.mark.parametrize("stride, padding", [((1, 1), (0, 0)), ((2, 1), (2, 1))])
def test_band_rows_continued_across_work_items(threads, c, stride, padding):
    """Wide images: one output row per work item, handed out a few consecutive items at a time,
    so a thread's next item continues the rows its band holds and copies their overlap from it
    (in place: the band holds one row), but not across an image boundary."""
    from im2win.plan import streams_windows

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        shape = im2win.ConvShape(3, c, 24, 400, 20, 5, 3, stride, padding)
        assert streams_windows(shape, threads) and shape.q >= 384  # 1 row an item
        x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
        _check("im2win", x, w, torch.randn(shape.k), stride, padding)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [2, 3])
def test_im2win_with_the_output_channels_split_between_threads_matches_the_oracle(threads):
    """The streamed path's other schedule (im2win_fused_splits_k): each thread packs and convolves
    its own share of the channel blocks over every row, building every band itself. The host's
    caches decide where it runs (conv11 at batch 4 on cores with 2 MB of L2); built with
    -DIM2WIN_SPLIT_K=1 it runs wherever a thread has a channel block, on any host. Shares of
    unequal length (3 or 4 blocks over the threads), a partial last block, strides, padding, an
    even filter, a 1 x 1 filter; the first two through im2win (its path and label), the others
    through the streamed kernel itself (im2win would materialise their small windows)."""
    from im2win import cpu
    from im2win.implementations import im2win_with_phases
    from im2win.plan import STREAMED_SPLIT, fused_plan, fused_splits_channels
    from im2win.streamed import convolve_fused

    torch.manual_seed(0)
    shapes = [  # (x, w, stride, padding)
        ((3, 8, 12, 9), (70, 8, 3, 3), (1, 1), (1, 1)),
        ((3, 3, 20, 16), (70, 3, 2, 4), (2, 2), (2, 0)),
        ((2, 16, 27, 21), (96, 16, 5, 3), (2, 1), (2, 0)),
        ((3, 24, 12, 12), (128, 24, 1, 1), (1, 1), (0, 0)),
    ]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with cpu.kernels_from(cpu.SOURCE, "native", ("IM2WIN_SPLIT_K=1",)):
            for i, (x_shape, w_shape, stride, padding) in enumerate(shapes):
                x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
                shape = im2win.ConvShape.of(x, w, stride, padding)
                assert fused_splits_channels(shape, threads), x_shape
                if i < 2:
                    out, phases = im2win_with_phases(x, w, b, stride, padding)
                    assert phases["path"] == STREAMED_SPLIT
                else:
                    out, _ = convolve_fused(x, shape, w, b, fused_plan(shape, threads)[0])
                assert max_violation(out, x, w, b, stride, padding) <= 1.0, (threads, x_shape)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", ["native", "x86-64-v3"])
def test_im2win_taking_every_channel_block_a_tile_matches_the_oracle(level, threads):
    """Where the whole packed filter fits in L1 (im2win_fused_item_blocks), each tile of pixels
    runs through every channel block before the next tile, on Intel's tuning (-DIM2WIN_INTEL=1,
    on any CPU) and AMD's alike. Filters of a few KB, so on any L1: several channel blocks and a
    partial last one (K = 70 and 50 on 32- and 16-channel panels), a stride per axis, padding, an
    even filter; the AVX-512 and AVX2 code where this CPU runs them (AVX-512: two panels a tile,
    ukernel_wide, and the partial last one through 12 x 2 tiles). Not where the filter outgrows
    L1 and, with AVX-512 on Intel's tuning, a quarter of L2: conv5 (2.4 MB packed) at batch 4."""
    from im2win import cpu
    from im2win.cpu import levels
    from im2win.implementations import im2win_with_phases
    from im2win.plan import STREAMED_TILES, fused_item_blocks

    if level != "native" and not levels.runs_here(level):
        pytest.skip(f"this CPU does not run {level} code")
    torch.manual_seed(0)
    shapes = [  # (x, w, stride, padding)
        ((4, 3, 30, 34), (70, 3, 3, 3), (1, 1), (1, 1)),
        ((3, 4, 41, 37), (50, 4, 2, 2), (2, 1), (1, 0)),
    ]
    with timing.threads(threads):
        for tuning in ("IM2WIN_INTEL=0", "IM2WIN_INTEL=1"):
            with cpu.kernels_from(cpu.SOURCE, level, (tuning,)) as kernels:
                panel = 2 * kernels.im2win_simd_width()  # NR = 2 vectors of output channels
                for x_shape, w_shape, stride, padding in shapes:
                    x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
                    shape = im2win.ConvShape.of(x, w, stride, padding)
                    blocks = -(-shape.k // panel)
                    assert fused_item_blocks(shape, threads) == blocks > 1, (tuning, x_shape)
                    out, phases = im2win_with_phases(x, w, b, stride, padding)
                    assert phases["path"] == STREAMED_TILES.format(blocks)
                    violation = max_violation(out, x, w, b, stride, padding)
                    assert violation <= 1.0, (tuning, threads, x_shape)
                assert fused_item_blocks(PAPER_LAYERS["conv5"].with_batch(4), threads) == 1


@pytest.mark.parametrize("threads", [1, 2])
def test_intel_avx512_takes_two_channel_blocks_a_tile_where_they_fit_in_l2(threads):
    """Intel's AVX-512 code (-DIM2WIN_INTEL=1) gives each work item two channel blocks where they
    pair up and a pair's panels fit in a quarter of L2 (T = 288: 74 KB a pair, past any L1 of
    48 KB), run through ukernel_wide, whole pairs only: K = 128 (four blocks), 120 (the last
    pair's second block partial, through 12 x 2 tiles), a stride and padding. Not where the
    blocks do not pair up (K = 96) nor on AMD's tuning."""
    from im2win import cpu
    from im2win.cpu import levels
    from im2win.implementations import im2win_with_phases
    from im2win.plan import STREAMED_TILES, fused_item_blocks

    if not levels.runs_here("x86-64-v4"):
        pytest.skip("this CPU does not run AVX-512 code")
    torch.manual_seed(0)
    shapes = [  # (x, w, stride, padding)
        ((3, 32, 30, 34), (128, 32, 3, 3), (1, 1), (1, 1)),
        ((2, 32, 33, 29), (120, 32, 3, 3), (2, 1), (0, 1)),
    ]
    with timing.threads(threads):
        with cpu.kernels_from(cpu.SOURCE, "x86-64-v4", ("IM2WIN_INTEL=1",)):
            for x_shape, w_shape, stride, padding in shapes:
                x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
                shape = im2win.ConvShape.of(x, w, stride, padding)
                assert fused_item_blocks(shape, threads) == 2, x_shape
                out, phases = im2win_with_phases(x, w, b, stride, padding)
                assert phases["path"] == STREAMED_TILES.format(2)
                assert max_violation(out, x, w, b, stride, padding) <= 1.0, (threads, x_shape)
            odd = im2win.ConvShape(n=3, c=32, h=30, w=34, k=96, r=3, s=3)
            assert fused_item_blocks(odd, threads) == 1
        with cpu.kernels_from(cpu.SOURCE, "x86-64-v4", ("IM2WIN_INTEL=0",)):
            assert fused_item_blocks(im2win.ConvShape.of(x, w, stride, padding), threads) == 1


def test_the_output_channels_are_split_only_where_timed():
    """Without -DIM2WIN_SPLIT_K the split takes two threads (each thread builds every band: with
    more, the bands' work would grow with the count) and a filter that outgrows the L2 cache:
    never on one or three threads, nor on the paper layers whose filter fits in L2 at batch 4."""
    from im2win.plan import fused_splits_channels

    conv11 = PAPER_LAYERS["conv11"].with_batch(4)
    assert not fused_splits_channels(conv11, 1) and not fused_splits_channels(conv11, 3)
    for name in ("conv1", "conv3", "conv4", "conv7", "conv8", "conv9", "conv10"):
        assert not fused_splits_channels(PAPER_LAYERS[name].with_batch(4), 2), name


def test_im2win_reports_where_its_time_went():
    from im2win.implementations import im2win_with_phases
    from im2win.plan import streams_windows, window_planes
    from im2win.shapes import ConvShape

    shape = ConvShape(n=2, c=32, h=40, w=40, k=40, r=3, s=3)
    assert streams_windows(shape, torch.get_num_threads())
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    out, phases = im2win_with_phases(x, w, None, (1, 1), (0, 0))
    assert max_violation(out, x, w) <= 1.0
    assert phases["transform_ms"] > 0 and phases["pack_ms"] > 0
    total = phases["transform_ms"] + phases["pack_ms"]
    assert 0 <= phases["wait_ms"] < 1e3 and total < 1e3  # the end wait: one thread's lead
    threads = torch.get_num_threads()
    late = ConvShape(n=1, c=64, h=9, w=9, k=256, r=3, s=3)  # window planes, or the whole tensor
    conv6 = PAPER_LAYERS["conv6"].with_batch(2)  # the whole window tensor
    for shape in (late, conv6):
        assert not streams_windows(shape, threads)
        x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
        out, phases = im2win_with_phases(x, w, None, (1, 1), (0, 0))
        planes = window_planes(shape, threads)
        path = "window planes a thread" if planes else "whole window tensor"
        assert max_violation(out, x, w) <= 1.0 and phases["path"] == path
        assert phases["transform_ms"] > 0 and phases["pack_ms"] > 0 and phases["wait_ms"] >= 0


def test_kernels_from_a_variant_source_then_back(tmp_path):
    """im2win.cpu.kernels_from runs the implementations on a copy of the kernel source (what
    python -m im2win.cpu.kernel_ab times side by side) and restores the package's kernels after the block;
    the comparison runs end to end."""
    import subprocess
    import sys

    from im2win import cpu
    from im2win.cpu import levels

    variant = tmp_path / "variant.cpp"
    variant.write_text(
        cpu.SOURCE.read_text().replace(
            "constexpr int TC = 192;",
            "constexpr int TC = 96;",
        )
    )
    own = cpu.lib()
    x, w = torch.randn(1, 20, 12, 12), torch.randn(9, 20, 3, 3)
    with cpu.kernels_from(variant) as handle:
        assert cpu.lib() is handle and handle is not own
        panel = 96 * 2 * handle.im2win_simd_width()  # the variant's TC x KB panel
        assert handle.im2win_filter_work_floats(9, 20, 3, 3, 10, 20, 1) == panel
        assert own.im2win_filter_work_floats(9, 20, 3, 3, 10, 20, 1) != panel
        _check("im2win", x, w, None, 1, 0)
    assert cpu.lib() is own
    root = Path(__file__).resolve().parents[1]
    level = "x86-64-v2" if levels.runs_here("x86-64-v2") else "native"  # a narrower level, if x86
    ab = [sys.executable, "-m", "im2win.cpu.kernel_ab", str(cpu.SOURCE), str(variant)]
    small = ["--layers", "conv12", "--batch", "1", "--rounds", "1", "--threads", "1"]
    proc = subprocess.run(
        [*ab, *small, "--march", level, "--between", "torch"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "conv12" in proc.stdout and "variant.cpp=" in proc.stdout
    assert "torch run before each call" in proc.stdout  # the peers run between the timed calls
    if level != "native":  # and run the same level's code as the variants
        assert f"(held to {level})" in proc.stdout
    # each variant's window bands and filter packing (the kernel's own timers), in ms
    assert re.search(r"variant\.cpp=\s*[\d.]+ \([\d.]+, [\d.]+ ms\)", proc.stdout), proc.stdout
    assert f"-march={level}" in proc.stdout
    assert "round trip" not in proc.stdout  # one thread: no threads' round trip to report
    assert "kernel_ab: 100%" in proc.stderr  # the rounds' progress bar, on stderr
    if timing.available_cores() >= 2:  # --threads takes at most the cores there are
        two = [*small[:-1], "2", "--cold", "--no-progress"]
        proc = subprocess.run([*ab, *two], cwd=root, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "kernel_ab" not in proc.stderr
        assert "threads' round trip: " in proc.stdout  # where the two threads ran, before, after
        assert "caches flushed before each call" in proc.stdout
    proc = subprocess.run(
        [*ab, *small, "--march", "x86-64-v9"], cwd=root, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "unknown x86 level 'x86-64-v9'" in proc.stderr


def test_kernel_ab_cold_buffer_outgrows_the_last_level_cache():
    from harness import environment
    from im2win.cpu import kernel_ab

    llc = environment.cpu_details()["l3_bytes"] or 32 << 20
    assert kernel_ab.evictor().numel() * 4 >= 2 * llc


def test_a_shape_round_trips_through_a_run_record():
    import json

    from im2win.shapes import ConvShape

    shape = ConvShape(n=2, c=5, h=9, w=11, k=70, r=3, s=2, stride=(2, 1), padding=(1, 0))
    record = json.loads(json.dumps({"layer": "x", "tflops": 1.0, **shape.as_dict()}))
    assert ConvShape.from_dict(record) == shape


def test_the_oracle_runs_over_slices_of_a_large_batch(monkeypatch):
    """PyTorch's float64 conv2d unfolds the whole batch at once (38 GB for conv4 at batch 128), so
    the oracle and its error bound run over slices of the batch: the same values, slice by slice,
    and still a failing check for a wrong output."""
    import im2win.reference as reference

    x, w, b = torch.randn(5, 3, 9, 8), torch.randn(4, 3, 3, 2), torch.randn(4)
    whole = reference.conv2d_reference(x, w, b, (2, 1), (1, 0))
    bound = reference.error_bound(x, w, b, (2, 1), (1, 0))
    calls = []
    real = torch.nn.functional.conv2d
    # an image's unfolded float64 matrix: C*R*S x P*Q = 18 x 35 doubles; two a slice
    monkeypatch.setattr(reference, "CHUNK_BYTES", 2 * 18 * 35 * 8)
    monkeypatch.setattr(
        reference.F, "conv2d", lambda xs, *a, **k: calls.append(len(xs)) or real(xs, *a, **k)
    )
    assert torch.equal(reference.conv2d_reference(x, w, b, (2, 1), (1, 0)), whole)
    assert torch.equal(reference.error_bound(x, w, b, (2, 1), (1, 0)), bound)
    assert calls == [2, 2, 1, 2, 2, 1]
    out = im2win.conv2d(x, w, b, (2, 1), (1, 0))
    assert max_violation(out, x, w, b, (2, 1), (1, 0)) <= 1.0
    out[4, 0, 0, 0] += 0.1
    assert max_violation(out, x, w, b, (2, 1), (1, 0)) > 1.0


def test_im2win_workspace_within_half_of_im2col_at_the_quick_scale():
    """The memory goal's setting (batch 4, 2 threads): im2win's workspace stays under half of
    im2col's matrix on every paper layer; conv11 streams its bands with the filter packed once in
    the room that leaves (K = 256 > M / 4 = 144)."""
    from im2win.metrics import im2col_elems
    from im2win.plan import im2win_workspace_floats, streams_windows

    for name, layer in PAPER_LAYERS.items():
        shape = layer.with_batch(4)
        assert im2win_workspace_floats(shape, 2) <= 0.5 * im2col_elems(shape), name
    assert streams_windows(PAPER_LAYERS["conv11"].with_batch(4), 2)


def test_kernel_ab_refuses_counts_below_one_before_running(capsys):
    """--batch 0 reached the kernel and killed the process (an integer division by zero); --rounds
    0 divided by zero in the report. Both are usage errors now, before anything is built."""
    from im2win import cpu
    from im2win.cpu import kernel_ab

    for flag in ("--batch", "--rounds", "--threads"):
        with pytest.raises(SystemExit) as exc:
            kernel_ab.main([str(cpu.SOURCE), "--layers", "conv9", flag, "0"])
        assert exc.value.code == 2
        assert f"argument {flag}: must be a whole number >= 1, got 0" in capsys.readouterr().err


def test_kernel_ab_refuses_a_file_that_is_not_cpp_before_compiling(tmp_path, capsys):
    """Given a file without a C++ suffix, the compiler took it for a linker script and failed in
    the linker's words; it is a usage error now, naming the file."""
    from im2win import cpu
    from im2win.cpu import kernel_ab

    notes = tmp_path / "notes.md"
    notes.write_text("# not a kernel\n")
    with pytest.raises(SystemExit) as exc:
        kernel_ab.main([str(cpu.SOURCE), str(notes), "--layers", "conv9"])
    assert exc.value.code == 2
    assert f"not a C++ source (.cpp, .cc, .cxx, .C): {notes}" in capsys.readouterr().err


def _kernel_ab_without_timing(monkeypatch) -> dict:
    """kernel_ab with nothing built or timed: what main hands compare (its variants, and its
    arguments after variants and layers) lands in the returned dict, and every variant reports the
    same row."""
    from im2win.cpu import kernel_ab

    seen = {}

    def compare(variants, layers, *args):
        seen["variants"], seen["args"] = variants, args
        return [("conv9", 1e9, [(100.0, 0.1, 0.1, 90.0)] * len(variants), {})]

    monkeypatch.setattr(kernel_ab, "compare", compare)
    monkeypatch.setattr(kernel_ab, "build", lambda *args: None)
    return seen


def test_kernel_ab_times_each_definition_as_a_variant(monkeypatch, capsys):
    """--defines: every source built with each -D definition apart (crossed with --blocks), each
    labelled with it; a definition not of the form NAME=VALUE is a usage error, before anything is
    built or reaches the compiler's command line."""
    from im2win import cpu
    from im2win.cpu import kernel_ab

    seen = _kernel_ab_without_timing(monkeypatch)
    argv = [str(cpu.SOURCE), "--layers", "conv9", "--threads", "1", "--blocks", "12x2", "6x4"]
    assert kernel_ab.main([*argv, "--defines", "IM2WIN_INTEL=0", "IM2WIN_INTEL=1"]) == 0
    assert [defs for _, defs, _ in seen["variants"]] == [
        (*cpu.block_defines(block), f"IM2WIN_INTEL={intel}")
        for block in ("12x2", "6x4")
        for intel in (0, 1)
    ]
    assert "im2win_cpu.cpp@6x4+IM2WIN_INTEL=1=" in capsys.readouterr().out
    for bad in ("IM2WIN_INTEL", "X=1;rm", "1X=2"):
        with pytest.raises(SystemExit) as exc:
            kernel_ab.main([*argv, "--defines", bad])
        assert exc.value.code == 2
        assert f"--defines {bad}: give each as NAME=VALUE" in capsys.readouterr().err


def test_kernel_ab_times_each_implementation_on_every_variant(monkeypatch, capsys):
    """--impl with several ids: each variant is timed with each of them, side by side, labelled
    with it; --channels-last reaches the timing (the input as a network hands it on)."""
    from im2win import cpu
    from im2win.cpu import kernel_ab

    seen = _kernel_ab_without_timing(monkeypatch)
    argv = [str(cpu.SOURCE), "--layers", "conv9", "--threads", "1", "--defines", "A=0", "A=1"]
    assert kernel_ab.main([*argv, "--impl", "im2win", "direct_nhwc", "--channels-last"]) == 0
    assert [(defs, impl) for _, defs, impl in seen["variants"]] == [
        (("A=0",), "im2win"),
        (("A=0",), "direct_nhwc"),
        (("A=1",), "im2win"),
        (("A=1",), "direct_nhwc"),
    ]
    assert seen["args"][-1] is True  # channels_last
    out = capsys.readouterr().out
    assert "im2win_cpu.cpp+A=1#direct_nhwc=" in out and "channels_last input" in out
    assert kernel_ab.main(argv) == 0  # one implementation: labels as before, NCHW input
    assert seen["args"][-1] is False
    assert "#im2win" not in capsys.readouterr().out


def test_kernel_ab_builds_every_variant_first_and_says_why_one_fails(tmp_path, capsys):
    """A variant that does not compile, or lacks an entry point, is a message naming it before any
    round runs (it was a traceback from the first round's call, under the progress bar)."""
    from im2win import cpu
    from im2win.cpu import kernel_ab

    broken = tmp_path / "broken.cpp"
    broken.write_text("int x\n")
    renamed = tmp_path / "renamed.cpp"
    renamed.write_text(
        cpu.SOURCE.read_text().replace(
            "double im2win_ukernel_gflops(", "double im2win_ukernel_gflops_renamed("
        )
    )
    for variant, says in (
        (broken, "kernel_ab: broken.cpp: compiling broken.cpp with"),
        (renamed, "kernel_ab: renamed.cpp lacks an entry point of im2win_cpu.cpp"),
    ):
        with pytest.raises(SystemExit) as exc:
            kernel_ab.main([str(cpu.SOURCE), str(variant), "--layers", "conv9", "--no-progress"])
        assert str(exc.value.code).startswith(says)
    assert "undefined symbol: im2win_ukernel_gflops" in str(exc.value.code)
    assert capsys.readouterr().out == ""  # no round ran


def test_kernel_ab_times_a_variant_older_than_the_probes_of_the_micro_kernels_parts(tmp_path):
    """A copy of the source from before im2win_ukernel_part_gflops (which only the reproduction's
    probes call) builds and runs as a kernel_ab variant; the package's own source must have it."""
    from im2win import cpu
    from im2win.cpu import kernel_ab

    older = tmp_path / "older.cpp"
    older.write_text(
        cpu.SOURCE.read_text().replace(
            "double im2win_ukernel_part_gflops(", "double im2win_ukernel_part_gflops_later("
        )
    )
    kernel_ab.build([(cpu.SOURCE, ()), (older, ())], ["im2win_cpu.cpp", "older.cpp"], "native")
    with cpu.kernels_from(older):
        x, w = torch.randn(1, 3, 9, 9), torch.randn(4, 3, 3, 3)
        out = im2win.conv2d(x, w, None, 1, 1, impl="im2win")
        assert max_violation(out, x, w, None, 1, 1) <= 1.0


def test_kernel_ab_reports_each_placement_of_the_threads(tmp_path, monkeypatch, capsys):
    """Where a layer's rounds ran with the two threads both together and apart (a short round trip
    before each round), kernel_ab prints each variant's best and median in each placement under the
    layer, with the median window bands and filter packing of its phase-timed calls."""
    from harness import timing
    from im2win.cpu import kernel_ab

    monkeypatch.setattr(timing, "available_cores", lambda: 2)  # --threads 2 below, on any machine
    trip = {"ns": 600.0}
    monkeypatch.setattr(
        kernel_ab, "thread_round_trip_ns", lambda n, **kw: trip["ns"] if n >= 2 else None
    )
    assert kernel_ab.placement(2) == "apart" and kernel_ab.placement(1) is None
    trip["ns"] = 80.0
    assert kernel_ab.placement(2) == "together"
    flops = 1e9  # 1 GFLOP: GFLOP/s = 1 / seconds
    together = kernel_ab.Placement(
        3,
        [[1 / 220, 1 / 200, 1 / 100], [1 / 231, 1 / 210, 1 / 105]],
        [[(0.1, 0.2), (0.3, 0.4), (0.2, 0.9)], [(0.1, 0.2), (0.1, 0.2), (0.1, 0.2)]],
    )
    apart = kernel_ab.Placement(2, [[1 / 180, 1 / 150], [1 / 171, 1 / 171]], [[], []])
    places = {"together": together, "apart": apart}
    rows = [("conv9", flops, [(200.0, 0.1, 0.2, 180.0), (210.0, 0.1, 0.2, 171.0)], places)]
    monkeypatch.setattr(kernel_ab, "compare", lambda *args: rows)
    monkeypatch.setattr(kernel_ab, "build", lambda *args: None)  # a.cpp and b.cpp are empty
    a, b = tmp_path / "a.cpp", tmp_path / "b.cpp"
    a.write_text(""), b.write_text("")
    assert kernel_ab.main([str(a), str(b), "--layers", "conv9", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert (  # each variant's best call, then its median call, against the first's
        "conv9   a.cpp=  200.0 (0.10, 0.20 ms) x1.000 median 180.0 x1.000  "
        "b.cpp=  210.0 (0.10, 0.20 ms) x1.050 median 171.0 x0.950" in out
    )
    # median of two calls: 1 / mean of their seconds; no phases timed: none printed
    assert (
        "  apart (2 rounds): a.cpp=  180.0 x1.000 (median 163.6)  b.cpp=  171.0 x0.950 "
        "(median 171.0)" in out
    )
    assert (
        "  together (3 rounds): a.cpp=  220.0 x1.000 (median 200.0; 0.20, 0.40 ms)  "
        "b.cpp=  231.0 x1.050 (median 210.0; 0.10, 0.20 ms)" in out
    )
    rows[0] = ("conv9", flops, rows[0][2], {"together": together})  # one placement: no split
    assert kernel_ab.main([str(a), str(b), "--layers", "conv9", "--threads", "2"]) == 0
    assert "  together (" not in capsys.readouterr().out


def test_direct_nhwc_reads_a_channels_last_input_in_place_and_copies_any_other():
    """direct_nhwc reads its windows from the input's rows: an unpadded channels_last input is
    read as it is (no copy), an NCHW or padded one through one padded channels_last copy; both
    match the oracle, and so does a run of S * C floats longer than one micro-kernel call
    (C = 1600: 4800 steps a run, sliced at 4608)."""
    from im2win.implementations import nhwc_input

    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 11).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(40, 16, 3, 3), torch.randn(40)
    same = im2win.ConvShape.of(x, w, (1, 1), (0, 0))
    assert nhwc_input(x, same).data_ptr() == x.data_ptr()
    padded = nhwc_input(x, im2win.ConvShape.of(x, w, (1, 1), (1, 2)))
    assert padded.shape == (2, 16, 11, 15) and padded.is_contiguous(
        memory_format=torch.channels_last
    )
    assert padded[:, :, 0].abs().sum() == padded[..., -2:].abs().sum() == 0
    nchw = nhwc_input(x.contiguous(), same)
    assert nchw.data_ptr() != x.data_ptr() and torch.equal(nchw, x)
    for stride, padding in (((1, 1), (0, 0)), ((2, 1), (1, 2))):
        for xin in (x, x.contiguous()):
            _check("direct_nhwc", xin, w, b, stride, padding)
    _check(
        "direct_nhwc", torch.randn(1, 1600, 4, 5), torch.randn(20, 1600, 3, 3), None, (1, 1), (0, 0)
    )
