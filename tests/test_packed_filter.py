"""im2win over a filter packed ahead of its calls (im2win.pack_filter, conv2d's packed=): the same
convolution as the oracle on every path's shapes, and a clear error for a packing that cannot stand
for the weight."""

import pytest
import torch

import im2win
from harness import timing
from im2win import cpu
from im2win.cpu import levels
from im2win.metrics import im2col_elems
from im2win.plan import path_plan, prepacked_work_floats
from im2win.reference import max_violation
from im2win.shapes import PAPER_LAYERS, reduced

SHAPES = [  # (x, weight, stride, padding): each path im2win takes without a packing, odd ones
    ((2, 3, 17, 19), (5, 3, 3, 3), (1, 1), (0, 0)),  # K below a channel block
    ((1, 64, 20, 20), (64, 64, 3, 3), (1, 1), (1, 1)),  # streamed bands
    ((1, 128, 14, 14), (256, 128, 1, 1), (2, 2), (0, 0)),  # window planes without a packing
    ((1, 256, 7, 7), (256, 256, 3, 3), (1, 1), (1, 1)),  # the whole window tensor without one
    ((3, 13, 9, 11), (33, 13, 2, 4), (2, 1), (1, 0)),  # K past a block, even and odd filter
    ((1, 40, 5, 5), (70, 40, 5, 5), (1, 1), (2, 2)),  # 25 pixels, a deep filter
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", SHAPES)
def test_a_packed_filter_gives_the_oracles_convolution(x_shape, w_shape, stride, padding, threads):
    torch.manual_seed(0)
    x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
    with timing.threads(threads):
        packed = im2win.pack_filter(w)
        for xi in (x, x.contiguous(memory_format=torch.channels_last)):
            out = im2win.conv2d(xi, w, b, stride, padding, packed=packed)
            assert max_violation(out, x, w, b, stride, padding) <= 1.0
            assert out.is_contiguous(memory_format=torch.channels_last)
        assert im2win.conv2d(x, w, None, stride, padding, packed=packed).shape == (
            torch.nn.functional.conv2d(x, w, None, stride, padding).shape
        )


def test_every_path_streams_its_bands_over_a_packed_filter():
    """The shapes that take window planes or the whole window tensor without a packing (the
    memory goal leaves no room for the filter packed in the call) stream window bands over one."""
    paths = set()
    for x_shape, w_shape, stride, padding in SHAPES:
        shape = im2win.ConvShape.of(torch.empty(x_shape), torch.empty(w_shape), stride, padding)
        paths.add(path_plan(shape, 2)[0])
        x, w = torch.randn(x_shape), torch.randn(w_shape)
        _, phases = im2win.packed.im2win_packed(x, im2win.pack_filter(w), None, stride, padding)
        assert phases["path"] == "streamed bands, filter packed ahead" and phases["pack_ms"] == 0
    assert paths == {"streamed bands", "window planes a thread", "whole window tensor"}


@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_a_packed_filter_on_the_paper_layers_reduced(layer):
    shape = reduced(PAPER_LAYERS[layer], n=2)
    x, w, b = (
        torch.randn(shape.input_shape()),
        torch.randn(shape.weight_shape()),
        torch.randn(shape.k),
    )
    out = im2win.conv2d(x, w, b, shape.stride, shape.padding, packed=im2win.pack_filter(w))
    assert max_violation(out, x, w, b, shape.stride, shape.padding) <= 1.0


@pytest.mark.parametrize("level", ["x86-64", "x86-64-v3"])
def test_a_packed_filter_on_the_narrower_x86_levels(level):
    """Packed by the kernels of each level and convolved by them (their channel blocks differ)."""
    if not levels.runs_here(level):
        pytest.skip(f"this CPU does not run {level}")
    with cpu.kernels_from(cpu.SOURCE, level):
        for x_shape, w_shape, stride, padding in SHAPES:
            x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
            out = im2win.conv2d(x, w, b, stride, padding, packed=im2win.pack_filter(w))
            assert max_violation(out, x, w, b, stride, padding) <= 1.0, (level, x_shape)


def test_the_bands_over_a_packed_filter_keep_the_memory_goal():
    """The work buffer is the bands alone, within half of the im2col matrix wherever a row a
    thread fits there (the paper's layers at batch 4)."""
    for name, layer in PAPER_LAYERS.items():
        shape = layer.with_batch(4)
        assert prepacked_work_floats(shape, 2) <= 0.5 * im2col_elems(shape), name


def test_a_packing_that_cannot_stand_for_the_weight_is_refused():
    x, w = torch.randn(1, 8, 9, 9), torch.randn(16, 8, 3, 3)
    packed = im2win.pack_filter(w)
    with pytest.raises(
        ValueError, match=r"shape \(16, 8, 3, 3\), not the weight's \(16, 8, 3, 1\)"
    ):
        im2win.conv2d(x, w[..., :1], packed=packed)
    with pytest.raises(ValueError, match="packed is for impl 'im2win' on the CPU, not 'direct'"):
        im2win.conv2d(x, w, packed=packed, impl="direct")
    with pytest.raises(ValueError, match="must come from im2win.pack_filter"):
        im2win.conv2d(x, w, packed=packed.data)
    with cpu.kernels_from(cpu.SOURCE, "native", cpu.block_defines("3x1")):
        with pytest.raises(ValueError, match="other CPU kernels"):
            im2win.conv2d(x, w, packed=packed)
    with pytest.raises(ValueError, match="float32 CPU weight"):
        im2win.pack_filter(w.double())
    with pytest.raises(ValueError, match="4-D"):
        im2win.pack_filter(w[0])


def test_a_packed_filter_with_an_empty_batch_or_one_image():
    w = torch.randn(4, 3, 3, 3)
    packed = im2win.pack_filter(w)
    assert im2win.conv2d(torch.randn(0, 3, 8, 8), w, packed=packed).shape == (0, 4, 6, 6)
    x = torch.randn(3, 8, 8)
    out = im2win.conv2d(x, w, packed=packed)
    assert max_violation(out.unsqueeze(0), x.unsqueeze(0), w, None, (1, 1), (0, 0)) <= 1.0


def test_impl_im2win_packed_packs_once_per_weight_and_again_when_it_changes(monkeypatch):
    """impl "im2win_packed" (a network's form: the filter packed ahead and kept): the first call
    with a weight packs it, later calls reuse the packing, a change in place packs anew, and the
    packing goes with the weight; every output the oracle's."""
    from im2win import packed

    packs = []

    def counting(weight):
        packs.append(weight.shape)
        return pack_filter(weight)

    pack_filter = packed.pack_filter
    monkeypatch.setattr(packed, "pack_filter", counting)
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 16, 3, 3)
    for _ in range(3):
        out = im2win.conv2d(x, w, None, 1, 1, impl="im2win_packed")
    assert len(packs) == 1 and max_violation(out, x, w, None, (1, 1), (1, 1)) <= 1.0
    with torch.no_grad():
        w.mul_(-0.5)  # in place: the version counter moves
    out = im2win.conv2d(x, w, None, 1, 1, impl="im2win_packed")
    assert len(packs) == 2 and max_violation(out, x, w, None, (1, 1), (1, 1)) <= 1.0
    assert id(w) in packed._HELD
    key = id(w)
    del w
    assert key not in packed._HELD  # nothing kept past the weight
    with torch.inference_mode():  # no version to key on: packed in the call
        v = torch.randn(24, 16, 3, 3)
        im2win.conv2d(x, v, None, 1, 1, impl="im2win_packed")
        im2win.conv2d(x, v, None, 1, 1, impl="im2win_packed")
    assert len(packs) == 4
