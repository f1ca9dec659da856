"""Convolution shapes and the im2win papers' twelve benchmark layers.

The layer table is the authors' `benchmarks/benchmarks.h` (github.com/seth-lu/Im2win; batch 128, FP32,
no padding). conv4 has C = 64 in the CPU list (branch main) and C = 32 in the GPU list (branch CUDA).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ConvShape:
    """One 2-D convolution: input N x C x H x W, filter K x C x R x S, stride and zero padding per axis."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def p(self) -> int:
        """Output height."""
        return (self.h + 2 * self.padding[0] - self.r) // self.stride[0] + 1

    @property
    def q(self) -> int:
        """Output width."""
        return (self.w + 2 * self.padding[1] - self.s) // self.stride[1] + 1

    @property
    def window_width(self) -> int:
        """Columns of the (padded) input that windows touch: Wu = (Q - 1) * sx + S."""
        return (self.q - 1) * self.stride[1] + self.s

    @property
    def macs(self) -> int:
        return self.n * self.k * self.p * self.q * self.c * self.r * self.s

    @property
    def flops(self) -> int:
        """2 x MACs (one multiply and one add each)."""
        return 2 * self.macs

    @classmethod
    def of(cls, x, weight, stride: tuple[int, int], padding: tuple[int, int]) -> ConvShape:
        """The shape of conv2d(x, weight, stride=stride, padding=padding)."""
        n, c, h, w = x.shape
        k, _, r, s = weight.shape
        return cls(n, c, h, w, k, r, s, tuple(stride), tuple(padding))

    def x_args(self, x) -> tuple[int, ...]:
        """The streamed kernels' arguments after the input's address: its strides, kernel_args."""
        return (*x.stride(), *self.kernel_args())

    def kernel_args(self) -> tuple[int, ...]:
        """(N, C, H, W, K, R, S, sy, sx, py, px, P, Q): the order the compiled kernels take."""
        return (
            self.n,
            self.c,
            self.h,
            self.w,
            self.k,
            self.r,
            self.s,
            *self.stride,
            *self.padding,
            self.p,
            self.q,
        )

    def window_args(self) -> tuple[int, ...]:
        """(N, C, K, R, S, sx, P, Q): the order the kernels over a window tensor (and their
        plans) take; the window already holds the input's padding and row stride."""
        return (self.n, self.c, self.k, self.r, self.s, self.stride[1], self.p, self.q)

    def with_batch(self, n: int) -> ConvShape:
        return dataclasses.replace(self, n=n)

    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.c, self.r, self.s)

    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.k, self.p, self.q)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"p": self.p, "q": self.q}

    @classmethod
    def from_dict(cls, data: dict) -> ConvShape:
        """The shape as_dict wrote (its fields among others, stride and padding lists from JSON)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        )


def _layer(c: int, hw: int, k: int, rs: int, stride: int) -> ConvShape:
    return ConvShape(n=128, c=c, h=hw, w=hw, k=k, r=rs, s=rs, stride=(stride, stride))


PAPER_LAYERS: dict[str, ConvShape] = {
    "conv1": _layer(3, 227, 96, 11, 4),
    "conv2": _layer(3, 231, 96, 11, 4),
    "conv3": _layer(3, 227, 64, 7, 2),
    "conv4": _layer(64, 224, 64, 7, 2),
    "conv5": _layer(96, 24, 256, 5, 1),
    "conv6": _layer(256, 12, 512, 3, 1),
    "conv7": _layer(3, 224, 64, 3, 1),
    "conv8": _layer(64, 112, 128, 3, 1),
    "conv9": _layer(64, 56, 64, 3, 1),
    "conv10": _layer(128, 28, 128, 3, 1),
    "conv11": _layer(256, 14, 256, 3, 1),
    "conv12": _layer(512, 7, 512, 3, 1),
}
"""The papers' layers at batch 128 (CPU list: conv4 has C = 64)."""

PAPER_GPU_LAYERS: dict[str, ConvShape] = PAPER_LAYERS | {
    "conv4": dataclasses.replace(PAPER_LAYERS["conv4"], c=32)
}
"""The Euro-Par 2023 GPU paper's layers at batch 128: conv4 has C = 32 in the authors' GPU list
(seth-lu/Im2win, branch CUDA)."""


def reduced(shape: ConvShape, n: int = 1, max_out: int = 6) -> ConvShape:
    """A cheap copy of a layer for tests: same C, K, R, S and stride, output at most max_out x max_out."""
    p = min(shape.p, max_out)
    q = min(shape.q, max_out)
    return dataclasses.replace(
        shape,
        n=n,
        h=(p - 1) * shape.stride[0] + shape.r - 2 * shape.padding[0],
        w=(q - 1) * shape.stride[1] + shape.s - 2 * shape.padding[1],
    )
