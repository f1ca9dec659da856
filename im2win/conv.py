"""im2win.conv2d: one entry point for every implementation, with torch.nn.functional.conv2d semantics."""

from __future__ import annotations

import torch

from im2win.implementations import IMPLEMENTATIONS


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on both axes, got {value!r}")
    return pair


def _check(name: str, t, dims: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise ValueError(
            f"{name} has dtype {t.dtype}; im2win computes in float32 only: pass {name}.float()"
        )
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on {t.device}; im2win runs on the CPU or on CUDA GPUs")
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(t.shape)}")


def validate(input, weight, bias, stride, padding):
    """Check conv2d's tensors and hyper-parameters; returns (stride, padding) as pairs.

    Raises ValueError naming the problem and the fix.
    """
    _check("input", input, 4)
    _check("weight", weight, 4)
    if bias is not None:
        _check("bias", bias, 1)
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
    stride = _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
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


def conv2d(input, weight, bias=None, stride=1, padding=0, impl: str = "im2win") -> torch.Tensor:
    """2-D convolution (cross-correlation) of float32 tensors, like torch.nn.functional.conv2d.

    CPU tensors: every implementation. CUDA tensors: `im2win` and `direct` (the NVRTC-compiled
    kernels of im2win/cuda), `im2col_gemm` (unfold + cuBLAS) and `torch` (cuDNN).

    Args:
        input: [N, C, H, W] float32, any memory format or strides.
        weight: [K, C, R, S] float32.
        bias: [K] float32 or None.
        stride: int or (sy, sx), each >= 1.
        padding: int or (py, px) zeros on each side, each >= 0.
        impl: an id from im2win.IMPLEMENTATIONS ("im2win", "im2win_nchw", "direct", "im2col_gemm",
            "torch", "torch_cl").

    Returns:
        [N, K, P, Q] float32 with P = (H + 2py - R) // sy + 1 and Q = (W + 2px - S) // sx + 1.
        `im2win` and `torch_cl` return channels_last memory, the others contiguous NCHW.
        Threads: torch.get_num_threads(). Forward only: under grad mode, an argument that
        requires grad is refused with ValueError (use torch.no_grad()).
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    stride, padding = validate(input, weight, bias, stride, padding)
    implementation = IMPLEMENTATIONS[impl]
    run = implementation.cuda_run if input.is_cuda else implementation.run
    if run is None:
        on_cuda = [i.id for i in IMPLEMENTATIONS.values() if i.cuda_run is not None]
        raise ValueError(
            f"impl {impl!r} runs on the CPU only; on CUDA tensors choose one of "
            f"{', '.join(on_cuda)}"
        )
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
    with torch.no_grad():
        return run(input, weight, bias, stride, padding)
