"""The launch contract both runners rely on: for every kernel, the buffers and the typed scalars
that im2win/cuda/launch.py builds match the kernel's parameter list in the source (checked by
parsing it, so a signature change that the CUDA launcher would not notice without a GPU fails here)."""

import re

import pytest

from im2win.cuda.config import DEFAULT
from im2win.cuda.launch import conv_launch, direct_launch, filter_launch, window_launch
from im2win.cuda.source import kernel_source
from im2win.shapes import ConvShape

SHAPE = ConvShape(2, 3, 9, 11, 5, 3, 2, (2, 1), (1, 0))
STRIDES = (297, 99, 11, 1)


def _signature(kernel: str) -> list[str]:
    match = re.search(rf"\bvoid\s+{kernel}\(([^)]*)\)", kernel_source(), re.S)
    assert match, kernel
    params = [p.strip() for p in match.group(1).split(",")]
    return ["ptr" if "*" in p else ("l" if p.startswith("i64") else "i") for p in params]


@pytest.mark.parametrize(
    "launch, buffers",
    [
        (window_launch(SHAPE, STRIDES), 2),
        (filter_launch(SHAPE), 2),
        (conv_launch(SHAPE, DEFAULT, True), 4),
        (direct_launch(SHAPE, STRIDES, False), 4),
    ],
    ids=lambda v: getattr(v, "kernel", str(v)),
)
def test_launch_matches_kernel_signature(launch, buffers):
    sig = _signature(launch.kernel)
    assert sig[:buffers] == ["ptr"] * buffers
    assert "".join(sig[buffers:]) == launch.types
    assert len(launch.args) == len(launch.types)
    assert launch.grid[0] >= 1 and launch.block >= 1
