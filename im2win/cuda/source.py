"""The GPU kernel source as one text: the portability prelude followed by the kernels."""

from __future__ import annotations

import functools
from pathlib import Path

KERNEL_DIR = Path(__file__).with_name("kernels")


@functools.cache
def kernel_source() -> str:
    """portability.h + im2win.cu, the exact text both NVRTC and OpenCL compile."""
    prelude = (KERNEL_DIR / "portability.h").read_text()
    return prelude + '\n#line 1 "im2win.cu"\n' + (KERNEL_DIR / "im2win.cu").read_text()
