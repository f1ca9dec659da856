"""im2win.nn: the Conv2d that runs im2win.conv2d and the swap of a model's convolutions for it."""

import pytest
import torch
from torch import nn

import im2win.nn as inn


class Subclassed(nn.Conv2d):
    """A Conv2d subclass with a forward of its own: convert leaves it alone."""


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # swapped
        nn.ReLU(),
        nn.Sequential(
            nn.Conv2d(8, 8, 3, stride=2, bias=False),  # swapped
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 8, 3, groups=2, padding=1),  # grouped: kept
            nn.Conv2d(8, 8, 3, dilation=2, padding=2),  # dilated: kept
            nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),  # reflect: kept
            Subclassed(8, 8, 1),  # a subclass: kept
            nn.Conv2d(8, 16, 1, padding="same"),  # swapped
        ),
        nn.AdaptiveAvgPool2d(1),
    ).eval()


def test_convert_swaps_the_convolutions_im2win_runs_and_keeps_the_rest():
    stock, model = _model(), _model()
    params = dict(model.named_parameters())
    assert inn.convert(model) == 3
    swapped = [name for name, m in model.named_modules() if isinstance(m, inn.Conv2d)]
    assert swapped == ["0", "2.0", "2.6"]
    kept = [name for name, m in model.named_modules() if type(m) in (nn.Conv2d, Subclassed)]
    assert kept == ["2.2", "2.3", "2.4", "2.5"]
    # the same Parameter objects under the same names: the state_dict and an optimizer's
    # references are unchanged
    assert dict(model.named_parameters()) == params
    assert all(isinstance(p, nn.Parameter) and p.device.type == "cpu" for p in params.values())
    x = torch.randn(2, 3, 17, 15)
    with torch.inference_mode():
        ref, out = stock(x), model(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    assert inn.convert(model) == 0  # nothing left that it can swap


def test_converted_model_runs_any_impl_and_keeps_train_mode():
    model = _model().train()
    assert inn.convert(model, impl="direct") == 3
    assert all(
        m.impl == "direct" and m.training for m in model.modules() if isinstance(m, inn.Conv2d)
    )
    with torch.no_grad():
        assert model(torch.randn(1, 3, 9, 9)).shape == (1, 16, 1, 1)


def test_convert_refuses_an_unknown_impl_before_swapping_anything():
    model = _model()
    with pytest.raises(ValueError, match="unknown impl 'gemm'"):
        inn.convert(model, impl="gemm")
    assert not any(isinstance(m, inn.Conv2d) for m in model.modules())


def test_converted_model_under_grad_mode_says_it_is_forward_only():
    model = _model()
    inn.convert(model)
    with pytest.raises(ValueError, match=r"forward only .* torch.no_grad\(\)"):
        model(torch.randn(1, 3, 9, 9))


@pytest.mark.parametrize("impl", ["torch", "torch_cl_net", "im2win"])
def test_prepare_runs_a_model_as_each_peer_runs_it(impl):
    """torch: the model and input as given; torch_cl_net: both channels_last; im2win: its
    convolutions swapped. Each gives the stock model's output."""
    stock, model = _model(), _model()
    x = torch.randn(2, 3, 17, 15)
    model, xi = inn.prepare(model, x, impl)
    swapped = sum(isinstance(m, inn.Conv2d) for m in model.modules())
    assert swapped == (3 if impl == "im2win" else 0)
    cl = impl == "torch_cl_net"
    assert xi.is_contiguous(memory_format=torch.channels_last) == cl
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last) == cl
    with torch.inference_mode():
        ref, out = stock(x), model(xi)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_a_converted_module_packs_its_weight_once_and_again_when_it_changes(monkeypatch):
    """im2win.nn.Conv2d keeps its weight packed across calls, and packs it again when the weight
    changes in place (its version), is replaced by another tensor, or the kernels change; the
    output is the stock layer's each time."""
    import im2win.cpu
    import im2win.packed

    packs = []
    real = im2win.packed.pack_filter
    monkeypatch.setattr(im2win.packed, "pack_filter", lambda w: packs.append(w) or real(w))
    stock = nn.Conv2d(8, 16, 3, padding=1).eval()
    conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)).eval()
    conv.load_state_dict({f"0.{k}": v for k, v in stock.state_dict().items()})
    assert inn.convert(conv) == 1
    x = torch.randn(2, 8, 10, 10)

    def same():
        with torch.inference_mode():
            ref, out = stock(x), conv(x)
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())

    same(), same()
    assert len(packs) == 1
    with torch.no_grad():  # in place: the same tensor, a new version
        stock.weight.mul_(2), conv[0].weight.mul_(2)
    same()
    assert len(packs) == 2
    stock.weight = conv[0].weight = nn.Parameter(torch.randn(16, 8, 3, 3))  # another tensor
    same()
    assert len(packs) == 3
    with im2win.cpu.kernels_from(im2win.cpu.SOURCE, "native", im2win.cpu.block_defines("3x1")):
        same()
    same()
    assert len(packs) == 5
    conv[0].load_state_dict(stock.state_dict())  # copied in place
    same()
    assert len(packs) == 6


def test_a_module_plans_its_call_once_and_only_while_the_arguments_are_alike(monkeypatch):
    """After a forward through im2win.conv2d, im2win.nn.Conv2d runs the next ones alike from the
    call planned then (PackedCall), bit for bit what conv2d returned, without conv2d; any change
    that conv2d would treat otherwise goes through conv2d again: another input shape, strides,
    dtype or thread count, another padding or impl, the bias dropped, the weight changed, grad
    mode on (and its errors are conv2d's)."""
    calls = []
    real = inn.conv2d
    monkeypatch.setattr(inn, "conv2d", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    torch.manual_seed(0)
    stock = nn.Conv2d(8, 16, 3, padding=1).eval()
    conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1)).eval()
    conv.load_state_dict({f"0.{k}": v for k, v in stock.state_dict().items()})
    inn.convert(conv)
    x = torch.randn(2, 8, 10, 10)

    def run(x, through_conv2d: bool):
        before = len(calls)
        with torch.inference_mode():
            ref, out = stock(x), conv(x)
        assert len(calls) == before + through_conv2d
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
        return out

    first = run(x, True)
    assert torch.equal(run(x, False), first) and conv[0]._call is not None
    run(torch.randn(3, 8, 10, 10), True)  # another batch
    run(x.contiguous(memory_format=torch.channels_last), True)  # other strides
    run(x.contiguous(memory_format=torch.channels_last), False)
    stock.bias = conv[0].bias = nn.Parameter(torch.randn(16))  # another bias, alike: planned
    run(x, True), run(x, False)
    stock.padding = conv[0].padding = (0, 0)
    run(x, True), run(x, False)
    with torch.no_grad():  # the weight in place: a new version, packed again
        stock.weight.mul_(-1), conv[0].weight.mul_(-1)
    run(x, True), run(x, False)
    stock.bias = conv[0].bias = None
    run(x, True), run(x, False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run(x, True), run(x, False)
    finally:
        torch.set_num_threads(threads)
    run(x, True)
    conv[0].impl = "direct"
    run(x, True), run(x, True)
    conv[0].impl = "im2win"
    run(x, True)
    with pytest.raises(ValueError, match="float32 only"), torch.inference_mode():
        conv(x.double())
    with pytest.raises(ValueError, match="forward only"):
        conv(x)  # grad mode on, the weight requires grad
    assert conv[0]._call is not None and inn.unpack(conv) == 1 and conv[0]._call is None
    run(x, True)


def test_a_module_keeps_no_packing_where_it_is_not_asked_to_or_cannot():
    model = _model()
    inn.convert(model, pack_weight=False)
    with torch.inference_mode():
        model(torch.randn(1, 3, 9, 9))
    assert all(m._packed is None for m in model.modules() if isinstance(m, inn.Conv2d))
    model = _model()
    inn.convert(model, impl="direct")
    with torch.inference_mode():
        model(torch.randn(1, 3, 9, 9))
    assert all(m._packed is None for m in model.modules() if isinstance(m, inn.Conv2d))
    with torch.inference_mode():  # parameters made under inference_mode keep no version
        model = _model()
    inn.convert(model)
    with torch.inference_mode():
        model(torch.randn(1, 3, 9, 9))
    assert all(m._packed is None for m in model.modules() if isinstance(m, inn.Conv2d))


def test_prepare_compiles_the_strongest_pytorch_form_and_im2win_without_packing():
    """torch_compiled: the channels_last model compiled with its weights frozen (batch norms
    folded), the stock model's output; im2win_unpacked: swapped, keeping no packed weight."""
    stock = _model()
    x = torch.randn(2, 3, 17, 15)
    compiled, xc = inn.prepare(_model(), x, "torch_compiled")
    assert xc.is_contiguous(memory_format=torch.channels_last)
    unpacked, xu = inn.prepare(_model(), x, "im2win_unpacked")
    with torch.inference_mode():
        ref, out, out_u = stock(x), compiled(xc), unpacked(xu)
    for got in (out, out_u):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    convs = [m for m in unpacked.modules() if isinstance(m, inn.Conv2d)]
    assert len(convs) == 3 and all(not m.pack_weight and m._packed is None for m in convs)


def test_batch_norms_folded_into_the_convolutions_before_them():
    """fold_batch_norms: a copy with the batch norm after a convolution folded into it, the stock
    model's output before and after convert; a model in training mode or one torch.fx cannot
    trace is refused with what to do."""
    stock = _model()
    folded = inn.fold_batch_norms(stock)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in stock.modules())  # a copy
    assert inn.convert(folded) == 3
    prepared, _ = inn.prepare(_model(), torch.randn(1), "im2win_folded")
    x = torch.randn(2, 3, 17, 15)
    with torch.inference_mode():
        ref = stock(x)
        for out in (folded(x), prepared(x)):
            assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    with pytest.raises(ValueError, match=r"eval mode: call model.eval\(\)"):
        inn.fold_batch_norms(_model().train())

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # control flow on a value: torch.fx cannot trace it

    with pytest.raises(ValueError, match="cannot trace this one .* without folding"):
        inn.fold_batch_norms(Branchy().eval())


def test_a_module_that_ran_copies_and_pickles_without_its_packing():
    """copy.deepcopy and pickle (torch.save of a whole model) of a converted model after a
    forward: the packing stays behind, and the copy packs its own weight on its first forward,
    with the stock model's output. fold_batch_norms, which traces torch.nn.Conv2d layers, refuses
    a converted model with the order to call them in."""
    import copy
    import pickle

    import im2win

    stock, model = _model(), _model()
    inn.convert(model)
    x = torch.randn(2, 3, 17, 15)
    with torch.inference_mode():
        ref = stock(x)
        model(x)
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model))]
    for made in copies:
        convs = [m for m in made.modules() if isinstance(m, inn.Conv2d)]
        assert len(convs) == 3 and all(m._packed is None for m in convs)
        with torch.inference_mode():
            out = made(x)
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        assert all(m._packed is not None and m._packed[0]() is m.weight for m in convs)
    with pytest.raises(ValueError, match=r"fold first, then convert \(convert\(fold_batch_norms"):
        inn.fold_batch_norms(model)
    packed = pickle.loads(pickle.dumps(im2win.pack_filter(torch.randn(4, 3, 3, 3))))
    assert packed.weight_shape == (4, 3, 3, 3) and packed.kernels == im2win.cpu.kernels()


def test_a_change_through_data_is_seen_after_unpack():
    """weight.data's changes bypass the version counter the packing is keyed on: unpack drops every
    packing, and the next forward packs the changed weight."""
    stock, model = _model(), _model()
    inn.convert(model)
    x = torch.randn(2, 3, 17, 15)
    with torch.inference_mode():
        model(x)
    for s, m in zip(stock.modules(), model.modules(), strict=True):
        if isinstance(m, nn.Conv2d):
            s.weight.data.mul_(-1), m.weight.data.mul_(-1)
    assert inn.unpack(model) == 3
    assert inn.unpack(model) == 0
    with torch.inference_mode():
        ref, out = stock(x), model(x)
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
