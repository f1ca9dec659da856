"""Checks of conv2d's arguments, shared by every entry point (im2win.conv2d, the CUDA launcher and
the OpenCL emulation), so each refuses bad input with the same one-line ValueError."""

from __future__ import annotations

import operator

import torch


def _ints(values) -> tuple[int, int] | None:
    """A pair of integers (anything with __index__ but bool) as Python ints, else None."""
    if len(values) != 2 or any(isinstance(v, bool) for v in values):
        return None
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError:
        return None


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """`value` (an int or a pair of ints, each >= minimum; any integer type, e.g. numpy's, as
    F.conv2d takes them) as a pair of Python ints; a clear ValueError otherwise."""
    # the common forms first, as a module or a loop over layers passes them (a few microseconds
    # a call: the checks below took a third of a small convolution's Python side)
    if type(value) is int and value >= minimum:
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is type(value[1]) is int:
        if min(value) >= minimum:
            return value
    both = _ints(value if isinstance(value, tuple | list) else (value, value))
    if both is None:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(both) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on both axes, got {value!r}")
    return both


def _check(name: str, t, dims: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise ValueError(
            f"{name} has dtype {t.dtype}; im2win computes in float32 only: pass {name}.float()"
        )
    if t.layout != torch.strided:
        raise ValueError(
            f"{name} is a {t.layout} tensor; im2win takes dense tensors: pass {name}.to_dense()"
        )
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {t.device}; im2win runs on the CPU or on CUDA GPUs")
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D {layout}, got shape {tuple(t.shape)}")


def tensor_key(t) -> tuple:
    """What the checks read of a tensor argument (its type, shape, strides, dtype, device and
    requires_grad): tensors with equal keys pass or fail them alike, and are planned alike (the
    planned calls of im2win.conv2d and im2win.nn.Conv2d). Raises where `t` has no strides."""
    return type(t), t.shape, t.stride(), t.dtype, t.device, t.requires_grad


def _padding(padding, stride: tuple[int, int], weight: torch.Tensor):
    """F.conv2d's string paddings as a pair: "valid" none, "same" (stride 1) half the filter on
    each side where the filter's size is odd; an int or a pair of ints as they are."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return 0
    if padding != "same":
        raise ValueError(
            f"padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}"
        )
    if stride != (1, 1):
        raise ValueError(f"padding='same' needs stride 1 (as in F.conv2d), got stride {stride}")
    r, s = weight.shape[2:]
    if r % 2 == 0 or s % 2 == 0:
        raise ValueError(
            f"padding='same' with the even filter {r}x{s} pads one side more than the other, which "
            "im2win does not: pad the input with F.pad and pass padding=0"
        )
    return (r - 1) // 2, (s - 1) // 2


def validate(
    input, weight, bias, stride, padding, dilation=1, groups=1, input_layout="(N, C, H, W)"
):
    """Check conv2d's tensors and hyper-parameters; returns (stride, padding) as pairs.

    padding may also be F.conv2d's "valid" or "same"; dilation and groups must be 1 (F.conv2d's
    defaults, taken so that a call written for F.conv2d runs unchanged). input_layout: what the
    error for an input that is not 4-D says the caller takes.
    Raises ValueError naming the problem and the fix.
    """
    _check("input", input, 4, input_layout)
    _check("weight", weight, 4, "(K, C, R, S)")
    if bias is not None:
        _check("bias", bias, 1, "(K,)")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"bias has {bias.shape[0]} entries but weight has K={weight.shape[0]} "
                "output channels"
            )
    devices = {t.device for t in (input, weight, bias) if t is not None}
    if len(devices) > 1:
        raise ValueError(
            f"input, weight and bias are on different devices ({', '.join(map(str, devices))}): "
            "move them to one device with .to(device)"
        )
    stride = pair(stride, "stride", 1)
    padding = pair(_padding(padding, stride, weight), "padding", 0)
    if pair(dilation, "dilation", 1) != (1, 1):
        raise ValueError(
            f"dilation {dilation!r} is not supported (im2win convolves with dilation 1): "
            "use torch.nn.functional.conv2d"
        )
    if _ints((groups, groups)) != (1, 1):  # an integer 1 (not True, which _ints refuses)
        raise ValueError(
            f"groups={groups!r} is not supported (im2win convolves with groups=1): "
            "use torch.nn.functional.conv2d"
        )
    n, c, h, w = input.shape
    k, cw, r, s = weight.shape
    if c != cw:
        raise ValueError(
            f"channel mismatch: input has C={c} channels, weight {tuple(weight.shape)} "
            f"expects C={cw} (groups are not supported)"
        )
    if min(c, k, r, s) == 0:
        raise ValueError(
            f"weight {tuple(weight.shape)} and input {tuple(input.shape)} must have "
            "non-empty channel and filter dimensions"
        )
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    if r > hp or s > wp:
        raise ValueError(
            f"filter {r}x{s} is larger than the padded input {hp}x{wp} "
            f"(input {h}x{w}, padding {padding}): add padding or use a smaller filter"
        )
    return stride, padding
