"""The correctness oracle: torch.nn.functional.conv2d in float64, with a float32 error bound."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FLOAT32_EPS = 2.0**-24  # unit roundoff of float32


def conv2d_reference(x, weight, bias=None, stride=1, padding=0) -> torch.Tensor:
    """The exact result (to float64 precision) of conv2d on the given float32 tensors."""
    b = None if bias is None else bias.double()
    return F.conv2d(x.double(), weight.double(), b, stride=stride, padding=padding)


def error_bound(x, weight, bias=None, stride=1, padding=0, safety: float = 16.0) -> torch.Tensor:
    """Per-output tolerance for a float32 convolution: safety * u * sqrt(T) * (|x| * |w| + |b|).

    T = C*R*S is the length of each output's sum and u the float32 unit roundoff: the usual
    statistical bound on a float32 dot product's rounding error, relative to the sum of the absolute
    values of its terms. It is far below the size of one term (about 1/T of that sum), so a missing,
    extra or misplaced term fails the check.
    """
    t = weight.shape[1] * weight.shape[2] * weight.shape[3]
    b = None if bias is None else bias.double().abs()
    magnitude = F.conv2d(x.double().abs(), weight.double().abs(), b, stride=stride, padding=padding)
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
