"""im2win convolution (Lu et al., HPEC 2022 / Euro-Par 2023) and the peers it is measured against."""

from im2win import nn
from im2win.conv import conv2d
from im2win.implementations import BASELINE, IMPLEMENTATIONS
from im2win.packed import PackedFilter, pack_filter
from im2win.shapes import PAPER_LAYERS, ConvShape
from im2win.transform import WINDOW_TRANSFORMS

__all__ = [
    "BASELINE",
    "IMPLEMENTATIONS",
    "PAPER_LAYERS",
    "PackedFilter",
    "WINDOW_TRANSFORMS",
    "ConvShape",
    "conv2d",
    "nn",
    "pack_filter",
]
