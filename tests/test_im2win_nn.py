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
