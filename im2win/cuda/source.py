"""The GPU kernel source as one text: the portability prelude followed by the kernels."""

from __future__ import annotations

import functools
from pathlib import Path

KERNEL_DIR = Path(__file__).with_name("kernels")
SOURCES = ("im2win.cu", "im2win_band.cu")  # after portability.h, in this order


@functools.cache
def kernel_source() -> str:
    """portability.h + im2win.cu + im2win_band.cu, the exact text both NVRTC and OpenCL compile."""
    parts = [(KERNEL_DIR / "portability.h").read_text()]
    for name in SOURCES:
        parts.append(f'\n#line 1 "{name}"\n' + (KERNEL_DIR / name).read_text())
    return "".join(parts)
