"""The call of the CPU kernels that share the streamed im2win's arguments (im2win_conv_fused,
im2win_conv_planes, im2win_conv_prepacked): their output, work buffer and phase timers."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from im2win.cpu import lib


def ptr(t: torch.Tensor | None):
    """A tensor's address for the kernels, None (NULL) for none."""
    return None if t is None else t.data_ptr()


def contiguous_params(weight, bias):
    """Filter and bias as the kernels read them: contiguous."""
    return weight.contiguous(), None if bias is None else bias.contiguous()


PHASE_SLOTS = 3  # the kernels' phase_seconds: building bands, packing the filter, threads' wait


def kernel_phases(seconds) -> dict:
    return {
        "transform_ms": seconds[0] * 1e3,
        "pack_ms": seconds[1] * 1e3,
        "wait_ms": seconds[2] * 1e3,
    }


def convolve_fused(
    x, shape, weight, bias, work_floats: int, kernel=None
) -> tuple[torch.Tensor, ctypes.Array]:
    """The streamed im2win (im2win_conv_fused) with a work buffer of `work_floats` (the kernel's
    plan, fused_plan). Returns the output and the kernel's phase_seconds. im2win takes it only
    where the plan packs the whole filter once; the kernel also runs where it does not (the
    filter panel by panel into every work item). kernel: another with the same arguments
    (im2win_conv_planes, with its own plan's work_floats; im2win_conv_prepacked, `weight` then
    a PackedFilter's data)."""
    weight, bias = contiguous_params(weight, bias)
    return launch(
        kernel or lib().im2win_conv_fused,
        x,
        shape.x_args(x),
        weight,
        bias,
        shape.output_shape(),
        work_floats,
    )


def launch(
    kernel, x, x_args: tuple, weight, bias, output_shape, work_floats: int, timers: bool = True
) -> tuple[torch.Tensor, ctypes.Array | None]:
    """convolve_fused's call of `kernel` on arguments already made: x_args, x's strides and the
    shape's kernel_args; weight and bias (or None) contiguous. Returns the output (channels_last
    memory, of output_shape) and the kernel's phase_seconds (None: timers off, none asked for)."""
    out = torch.empty(output_shape, memory_format=torch.channels_last)
    work = torch.empty(work_floats)
    seconds = (ctypes.c_double * PHASE_SLOTS)() if timers else None
    kernel(
        x.data_ptr(),
        *x_args,
        weight.data_ptr(),
        ptr(bias),
        out.data_ptr(),
        work.data_ptr(),
        seconds,
        torch.get_num_threads(),
    )
    return out, seconds


@dataclass(frozen=True)
class Launch:
    """A call of one of the streamed kernels planned once, for the calls after it with alike
    arguments: the kernel (named in lib() when planned; the kernels loaded then), the input's
    strides and the shape's kernel_args (x_args), the output's shape and the work buffer's floats.
    Calling it launches the kernel on an input of those strides and a contiguous weight and bias
    (or None), its phase timers off; returns the output."""

    kernel: object
    x_args: tuple
    output_shape: tuple
    work_floats: int

    @classmethod
    def of(cls, name: str, x_args: tuple, output_shape: tuple, work_floats: int) -> Launch:
        return cls(getattr(lib(), name), x_args, output_shape, work_floats)

    def __call__(self, x, weight, bias) -> torch.Tensor:
        return self.run(x, weight, bias, timers=False)[0]

    def run(self, x, weight, bias, timers: bool = True) -> tuple[torch.Tensor, ctypes.Array | None]:
        """The output and the kernel's phase_seconds (None with the timers off)."""
        return launch(
            self.kernel, x, self.x_args, weight, bias, self.output_shape, self.work_floats, timers
        )
