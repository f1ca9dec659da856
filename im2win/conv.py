"""im2win.conv2d: one entry point for every implementation, with torch.nn.functional.conv2d semantics."""

from __future__ import annotations

import functools

import torch

from im2win import cpu
from im2win.implementations import IMPLEMENTATIONS, planned_call
from im2win.packed import PackedFilter, im2win_packed
from im2win.validation import tensor_key, validate

_CALLS: dict[tuple, object] = {}  # conv2d's calls planned once, by their arguments' _key
_CALLS_KEPT = 64  # the most kept; the oldest goes first


def _plain(value) -> bool:
    return type(value) in (int, str) or (
        type(value) is tuple and all(type(v) is int for v in value)
    )


def _key(input, weight, bias, stride, padding, dilation, groups, impl) -> tuple | None:
    """Everything of conv2d's arguments that its checks and its plan read (types, shapes, strides,
    dtypes, devices, requires_grad; the hyper-parameters as given), with grad mode, the thread
    count and the CPU kernels loaded: arguments with an equal key are checked and planned alike.
    None where they have no such key: not tensors, or a hyper-parameter other than an int, a
    string or a tuple of ints (True, 1.0 and numpy's integers equal 1 as keys; the checks tell
    them apart)."""
    if not all(map(_plain, (stride, padding, dilation, groups))):
        return None
    try:
        key = (
            impl,
            tensor_key(input),
            tensor_key(weight),
            None if bias is None else tensor_key(bias),
            stride,
            padding,
            dilation,
            groups,
            torch.is_grad_enabled(),
            torch.get_num_threads(),
            cpu.kernels(),
        )
        hash(key)
    except (AttributeError, TypeError, RuntimeError):  # RuntimeError: a layout without strides
        return None
    return key


def _plan(impl, run, input, weight, bias, stride, padding):
    """The call conv2d has just made for these (checked) arguments, for the next with an equal
    key: the implementation's own lean call where it has one (planned_call: im2win's kernel
    launch, without checks, plan or phase timers), else its run with the checked stride and
    padding."""
    lean = planned_call(impl, input, weight, bias, stride, padding)
    return lean or functools.partial(_no_grad_run, run, stride=stride, padding=padding)


def _no_grad_run(run, input, weight, bias, stride, padding):
    with torch.no_grad():
        return run(input, weight, bias, stride, padding)


def conv2d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    *,
    impl: str = "im2win",
    packed: PackedFilter | None = None,
) -> torch.Tensor:
    """2-D convolution (cross-correlation) of float32 tensors, like torch.nn.functional.conv2d,
    whose positional arguments it takes in the same order: a call written for F.conv2d runs
    unchanged where its dilation and groups are 1.

    CPU tensors: every implementation. CUDA tensors: `im2win` and `direct` (the NVRTC-compiled
    kernels of im2win/cuda), `im2col_gemm` (unfold + cuBLAS) and `torch` (cuDNN).

    Args:
        input: [N, C, H, W] float32, any memory format or strides; or [C, H, W] (one image,
            unbatched, as F.conv2d takes it).
        weight: [K, C, R, S] float32.
        bias: [K] float32 or None.
        stride: int or (sy, sx), each >= 1.
        padding: int or (py, px) zeros on each side, each >= 0; "valid" (none) or "same" (stride 1
            and an odd filter: the output as large as the input).
        dilation, groups: 1 (any other value is refused: im2win has neither).
        impl: an id from im2win.IMPLEMENTATIONS ("im2win", "im2win_nchw", "direct", "im2col_gemm",
            "torch", "torch_cl"); keyword only.
        packed: `weight` packed ahead by im2win.pack_filter(weight), for impl "im2win" on the
            CPU: the call then does not pack the filter itself. Keyword only; pack again after
            changing the weight (im2win.nn.Conv2d does so by itself).

    Returns:
        [N, K, P, Q] float32 with P = (H + 2py - R) // sy + 1 and Q = (W + 2px - S) // sx + 1
        ([K, P, Q] for an unbatched input).
        `im2win` and `torch_cl` return channels_last memory, the others contiguous NCHW.
        Threads: torch.get_num_threads(). Forward only: under grad mode, an argument that
        requires grad is refused with ValueError (use torch.no_grad()).
        A call whose arguments are alike a checked one's (the same kinds of tensors, shapes,
        strides and hyper-parameters, threads and grad mode: _key) runs as that one was planned,
        without checking and planning again; the 64 last such plans are kept.
    """
    key = (
        None
        if packed is not None
        else _key(input, weight, bias, stride, padding, dilation, groups, impl)
    )
    planned = _CALLS.get(key) if key is not None else None
    if planned is not None:
        return planned(input, weight, bias)
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    if isinstance(input, torch.Tensor) and input.dim() == 3:  # one image, as F.conv2d takes it
        batched = conv2d(
            input.unsqueeze(0),
            weight,
            bias,
            stride,
            padding,
            dilation,
            groups,
            impl=impl,
            packed=packed,
        )
        return batched.squeeze(0)
    stride, padding = validate(
        input, weight, bias, stride, padding, dilation, groups, "(N, C, H, W) or 3-D (C, H, W)"
    )
    implementation = IMPLEMENTATIONS[impl]
    run = implementation.cuda_run if input.is_cuda else implementation.run
    if run is None:
        on_cuda = [i.id for i in IMPLEMENTATIONS.values() if i.cuda_run is not None]
        raise ValueError(
            f"impl {impl!r} runs on the CPU only; on CUDA tensors choose one of "
            f"{', '.join(on_cuda)}"
        )
    if packed is not None:
        if impl != "im2win" or input.is_cuda:
            raise ValueError(
                f"packed is for impl 'im2win' on the CPU, not {impl!r} on {input.device}: "
                "drop packed=, or call with impl='im2win' on CPU tensors"
            )
        if not isinstance(packed, PackedFilter):
            raise ValueError(
                f"packed must come from im2win.pack_filter(weight), got {type(packed).__name__}"
            )
        packed.check(weight)
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, bias)
    ):
        raise ValueError(
            "im2win.conv2d is forward only (no backward pass), and an argument requires grad: "
            "call it under torch.no_grad(), or pass .detach()ed tensors"
        )
    if input.shape[0] == 0:  # an empty batch: nothing to compute (the kernels divide by N)
        k, _, r, s = weight.shape
        p = (input.shape[2] + 2 * padding[0] - r) // stride[0] + 1
        q = (input.shape[3] + 2 * padding[1] - s) // stride[1] + 1
        return input.new_empty((0, k, p, q))
    if packed is not None:
        with torch.no_grad():
            return im2win_packed(input, packed, bias, stride, padding)[0]
    out = _no_grad_run(run, input, weight, bias, stride, padding)
    if key is not None:
        if len(_CALLS) >= _CALLS_KEPT:
            del _CALLS[next(iter(_CALLS))]
        _CALLS[key] = _plan(impl, run, input, weight, bias, stride, padding)
    return out
