"""im2win.conv2d: one entry point for every implementation, with torch.nn.functional.conv2d semantics."""

from __future__ import annotations

import torch

from im2win.implementations import IMPLEMENTATIONS
from im2win.validation import validate


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
