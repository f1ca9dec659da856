"""im2win inside a network: a torch.nn.Conv2d that runs im2win.conv2d, and the swap of a model's
convolutions for it.

    model = torchvision.models.resnet18().eval()
    im2win.nn.convert(model)  # every Conv2d im2win can run, in place
    with torch.inference_mode():
        y = model(x)

Forward only, as im2win.conv2d: under grad mode with parameters that require grad it refuses with
ValueError; run the model under torch.no_grad() or torch.inference_mode().
"""

from __future__ import annotations

import torch

from im2win.conv import conv2d
from im2win.implementations import IMPLEMENTATIONS


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d whose forward is im2win.conv2d with `impl` (default "im2win"), with the
    same parameters and state_dict. Its output is channels_last memory (im2win's), which the
    layers after it (batch norm, ReLU, pooling) keep and the next im2win convolution reads as it
    is."""

    impl: str = "im2win"

    def _conv_forward(self, input, weight, bias):
        return conv2d(input, weight, bias, self.stride, self.padding, impl=self.impl)


def runs_on_im2win(module: torch.nn.Module) -> bool:
    """Whether `module` is a plain torch.nn.Conv2d that im2win.conv2d can run: one group, no
    dilation, zero padding, float32."""
    return (
        type(module) is torch.nn.Conv2d
        and module.groups == 1
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and module.weight.dtype == torch.float32
    )


def convert(model: torch.nn.Module, impl: str = "im2win") -> int:
    """Swap, in place, every torch.nn.Conv2d of `model` that im2win can run (runs_on_im2win) for
    a Conv2d running `impl` that shares its parameters. Others (grouped, dilated, other padding
    modes or dtypes, subclasses) stay as they are; hooks on a swapped module are not carried over.
    Returns how many were swapped."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if runs_on_im2win(child):
                conv = Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    bias=child.bias is not None,
                    device="meta",  # no parameters of its own: it takes child's below
                )
                conv.weight, conv.bias = child.weight, child.bias
                conv.impl = impl
                conv.train(child.training)
                setattr(parent, name, conv)
                swapped += 1
    return swapped


def prepare(
    model: torch.nn.Module, x: torch.Tensor, impl: str
) -> tuple[torch.nn.Module, torch.Tensor]:
    """`model` and its input `x` as a user runs them with `impl`: "torch", as they are (PyTorch's
    NCHW path); "torch_cl_net", both in channels_last memory (model.to(memory_format=...)), as a
    channels_last network runs; any other id, the model's convolutions swapped for that
    implementation (convert). The model is changed in place."""
    if impl == "torch":
        return model, x
    if impl == "torch_cl_net":
        cl = torch.channels_last
        return model.to(memory_format=cl), x.contiguous(memory_format=cl)
    convert(model, impl)
    return model, x


__all__ = ["Conv2d", "convert", "prepare", "runs_on_im2win"]
