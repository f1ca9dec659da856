"""The correctness oracle: torch.nn.functional.conv2d in float64, with a float32 error bound."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from im2win.shapes import ConvShape
from im2win.validation import pair

FLOAT32_EPS = 2.0**-24  # unit roundoff of float32
# Bytes of float64 work PyTorch's conv2d may take at once. Its float64 path (no oneDNN) unfolds every
# image of the batch into a C*R*S x P*Q matrix at once: 38 GB for conv4 at batch 128, which a
# 24 GB machine refuses; so the oracle runs over slices of the batch that stay under this.
CHUNK_BYTES = 1 << 30


def _conv64(x, weight, bias, stride, padding, absolute: bool = False) -> torch.Tensor:
    """F.conv2d of x (any float dtype; |x| where `absolute`) in float64 over slices of the batch
    (see CHUNK_BYTES), each slice converted on its own; weight, bias: float64."""
    shape = ConvShape.of(x, weight, pair(stride, "stride", 1), pair(padding, "padding", 0))
    unfolded = shape.c * shape.r * shape.s * max(0, shape.p) * max(0, shape.q) * 8  # an image's
    step = max(1, CHUNK_BYTES // max(1, unfolded))  # images a slice

    def part(xs):
        xs = xs.double()
        return F.conv2d(xs.abs() if absolute else xs, weight, bias, stride=stride, padding=padding)

    if x.shape[0] <= step:
        return part(x)
    return torch.cat([part(x[i : i + step]) for i in range(0, x.shape[0], step)])


def conv2d_reference(x, weight, bias=None, stride=1, padding=0) -> torch.Tensor:
    """The exact result (to float64 precision) of conv2d on the given float32 tensors."""
    b = None if bias is None else bias.double()
    return _conv64(x, weight.double(), b, stride, padding)


def error_bound(x, weight, bias=None, stride=1, padding=0, safety: float = 16.0) -> torch.Tensor:
    """Per-output tolerance for a float32 convolution: safety * u * sqrt(T) * (|x| * |w| + |b|).

    T = C*R*S is the length of each output's sum and u the float32 unit roundoff: the usual
    statistical bound on a float32 dot product's rounding error, relative to the sum of the absolute
    values of its terms. It is far below the size of one term (about 1/T of that sum), so a missing,
    extra or misplaced term fails the check.
    """
    t = weight.shape[1] * weight.shape[2] * weight.shape[3]
    b = None if bias is None else bias.double().abs()
    magnitude = _conv64(x, weight.double().abs(), b, stride, padding, absolute=True)
    return safety * FLOAT32_EPS * math.sqrt(t) * magnitude + torch.finfo(torch.float32).tiny


def max_violation(out, x, weight, bias=None, stride=1, padding=0) -> float:
    """max(|out - exact| / bound): at most 1 when `out` is a correct float32 convolution."""
    exact = conv2d_reference(x, weight, bias, stride, padding)
    if out.shape != exact.shape:
        raise AssertionError(f"output shape {tuple(out.shape)} != expected {tuple(exact.shape)}")
    if exact.numel() == 0:
        return 0.0
    bound = error_bound(x, weight, bias, stride, padding)
    return float(((out.double() - exact).abs() / bound).max())
