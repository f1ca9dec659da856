"""ctypes bindings of the compiled CPU kernels in im2win_cpu.cpp (built on first use, then cached)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from harness.native import CompilerError, load

SOURCE = Path(__file__).with_name("im2win_cpu.cpp")
_Result = TypeVar("_Result")

_P = ctypes.c_void_p
_I = ctypes.c_int
_L = ctypes.c_long
_SIGNATURES = {
    "im2win_simd_width": (_I, []),
    "im2win_filter_packed_once": (_I, [_I, _L]),  # K M
    "im2win_filter_work_floats": (_L, [_I, _I, _I, _I, _L, _I, _I]),  # K C R S M cb threads
    "im2win_ukernel_gflops": (ctypes.c_double, [_L, _I]),  # reps, threads
    "im2win_ukernel_part_gflops": (ctypes.c_double, [_I, _L, _I]),  # part, reps, threads
    # K C R S M, floats of the window tensor, threads -> channels a block
    "im2win_window_block": (_I, [_I, _I, _I, _I, _L, _L, _I]),
    "im2win_streams_output": (_I, [_I, _L, _L, _I, _I]),  # K M T packed-once threads
    # x, strides (n, c, h, w), N C H W R S sy sx py px P Q, iw, channels a block, threads,
    # whether every thread will read all of it
    "im2win_transform_nhwc": (None, [_P, _L, _L, _L, _L] + [_I] * 12 + [_P, _I, _I, _I]),
    "im2win_window_shared": (_I, [_I, _L, _I]),  # K M threads
    # x, strides (n, c, h, w), N C H W R S sy sx py px P Q, iw, threads
    "im2win_transform_nchw": (None, [_P, _L, _L, _L, _L] + [_I] * 12 + [_P, _I]),
    # iw, f, bias, out, N C K R S sx P Q, channels a block, work, phase_seconds, threads
    "im2win_conv_nhwc": (
        None,
        [_P, _P, _P, _P] + [_I] * 9 + [_P, ctypes.POINTER(ctypes.c_double), _I],
    ),
    # N C K R S sx P Q threads -> rows per item, band floats per thread, work floats in all,
    # whether it packs the whole filter once
    "im2win_fused_plan": (None, [_I] * 9 + [ctypes.POINTER(_L)] * 3 + [ctypes.POINTER(_I)]),
    # N C K R S sx P Q threads -> rows per item, band floats per thread, work floats in all
    "im2win_prepacked_plan": (None, [_I] * 9 + [ctypes.POINTER(_L)] * 3),
    "im2win_packed_filter_floats": (_L, [_I] * 4),  # K C R S
    "im2win_pack_filter": (None, [_P, _I, _I, _I, _I, _P, _I]),  # f, K C R S, packed, threads
    # N C K R S sx P Q threads -> whether each thread convolves its own share of the output channels
    "im2win_fused_splits_k": (_I, [_I] * 9),
    # N C K R S sx P Q threads -> channel blocks a work item takes, each tile through all of them
    "im2win_fused_item_blocks": (_I, [_I] * 9),
    # x, strides, N C H W K R S sy sx py px P Q, f, bias, out, work, phase_seconds, threads
    "im2win_conv_fused": (
        None,
        [_P, _L, _L, _L, _L] + [_I] * 13 + [_P, _P, _P, _P, ctypes.POINTER(ctypes.c_double), _I],
        # phase_seconds: double[3] (bands, filter packing, threads' wait)
    ),
    # x, strides, N C H W K R S sy sx py px P Q, packed filter, bias, out, work, phase_seconds,
    # threads
    "im2win_conv_prepacked": (
        None,
        [_P, _L, _L, _L, _L] + [_I] * 13 + [_P, _P, _P, _P, ctypes.POINTER(ctypes.c_double), _I],
    ),
    # N C K R S sx P Q threads, work floats (out) -> channels a plane (0: the path does not fit)
    "im2win_planes_plan": (_I, [_I] * 9 + [ctypes.POINTER(_L)]),
    # N C K R S sx P Q threads, work floats and window floats (out) -> channels a window block
    "im2win_whole_plan": (_I, [_I] * 9 + [ctypes.POINTER(_L)] * 2),
    # the arguments of im2win_conv_fused
    "im2win_conv_planes": (
        None,
        [_P, _L, _L, _L, _L] + [_I] * 13 + [_P, _P, _P, _P, ctypes.POINTER(ctypes.c_double), _I],
    ),
    # the arguments of im2win_conv_fused
    "im2win_conv_whole": (
        None,
        [_P, _L, _L, _L, _L] + [_I] * 13 + [_P, _P, _P, _P, ctypes.POINTER(ctypes.c_double), _I],
    ),
    # f, K C R S, fw, threads
    "im2win_filter_nchw": (None, [_P, _I, _I, _I, _I, _P, _I]),
    # iw, fw, bias, out, N C K R S sx P Q, threads
    "im2win_conv_nchw": (None, [_P, _P, _P, _P] + [_I] * 8 + [_I]),
    # x, f, bias, out, N C H W K R S sy sx py px P Q, threads
    "direct_conv_nchw": (None, [_P, _P, _P, _P] + [_I] * 13 + [_I]),
    "direct_nhwc_work_floats": (_L, [_I] * 4),  # K C R S
    # x, its image and row strides, N C H W K R S sy sx P Q, f, bias, out, work, phase_seconds,
    # threads
    "direct_conv_nhwc": (
        None,
        [_P, _L, _L] + [_I] * 11 + [_P, _P, _P, _P, ctypes.POINTER(ctypes.c_double), _I],
    ),
}


# Entry points added after kernel_ab first timed copies of the source: a variant that predates one
# (an older commit's im2win_cpu.cpp) loads without it, and its callers read it as absent.
_NEWER = frozenset(
    {
        "im2win_ukernel_part_gflops",
        "im2win_fused_item_blocks",
        "direct_nhwc_work_floats",
        "direct_conv_nhwc",
        "im2win_prepacked_plan",
        "im2win_packed_filter_floats",
        "im2win_pack_filter",
        "im2win_conv_prepacked",
    }
)


@functools.cache
def _load(source: Path, march: str, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    handle = load(source, march, defines)
    for name, (restype, argtypes) in _SIGNATURES.items():
        if name in _NEWER and source != SOURCE and not hasattr(handle, name):
            continue
        fn = getattr(handle, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return handle


_variants: list[tuple[Path, str, tuple[str, ...]]] = []  # kernels_from's stack


def kernels() -> tuple[Path, str, tuple[str, ...]]:
    """Which kernels lib() loads now: (source, x86 level, -D definitions), SOURCE's for this CPU
    outside kernels_from. Plain values, unlike the library: what outlives a copy or a pickle of
    something made by these kernels (im2win.PackedFilter)."""
    return _variants[-1] if _variants else (SOURCE, "native", ())


def lib() -> ctypes.CDLL:
    """The loaded kernel library with typed entry points (SOURCE's for this CPU, or kernels_from's)."""
    return _load(*kernels())


def per_kernels(query: Callable[..., _Result]) -> Callable[..., _Result]:
    """`query` (a pure function of the kernels' plan: workspace sizes, blocks, paths) cached per
    loaded library and arguments, which must be hashable (ConvShape, ints). Each call of a query
    goes through ctypes: the plans of one convolution took about 5 us of its Python side, of about
    25, against 1.3-2 ms for the paper's late layers at batch 4."""
    cached = functools.lru_cache(maxsize=1024)(lambda _kernels, *args: query(*args))

    @functools.wraps(query)
    def wrapper(*args):
        return cached(lib(), *args)

    return wrapper


@contextlib.contextmanager
def kernels_from(
    source: Path = SOURCE, march: str = "native", defines: tuple[str, ...] = ()
) -> Iterator[ctypes.CDLL]:
    """Within the block, every CPU implementation runs on the kernels compiled from `source` for
    -march=`march`: a variant of im2win_cpu.cpp with the same entry points, for timing kernel
    changes side by side in one process (python -m im2win.cpu.kernel_ab), or the package's own
    source built for a narrower x86 level than this CPU's (im2win.cpu.levels), to run its SSE or AVX2
    code paths. `defines` ("NAME=VALUE") build it with -D: another register block
    (block_defines). A level this CPU lacks dies with SIGILL: check im2win.cpu.levels.runs_here
    first."""
    source = Path(source).resolve()
    handle = _load(source, march, tuple(defines))
    _variants.append((source, march, tuple(defines)))
    try:
        yield handle
    finally:
        _variants.pop()


def block_defines(block: str) -> tuple[str, ...]:
    """The -D definitions that build the kernels with register block `block` ("MRxNR": MR pixels
    by NR vectors of output channels, e.g. "6x4"), for kernels_from and im2win.cpu.isa."""
    try:
        mr, nr = (int(v) for v in block.lower().split("x"))
    except ValueError:
        mr = nr = 0
    if not (1 <= mr <= 32 and 1 <= nr <= 8):
        raise ValueError(
            f"register block {block!r}: give it as MRxNR, pixels by vectors of output channels, "
            "e.g. 6x4 (1-32 by 1-8)"
        )
    return (f"IM2WIN_MR={mr}", f"IM2WIN_NR={nr}")


def block_argument(text: str) -> str:
    """A command line's register block "MRxNR" (argparse's `type`: block_defines' error becomes
    the command's usage error)."""
    try:
        block_defines(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


__all__ = [
    "CompilerError",
    "SOURCE",
    "block_argument",
    "block_defines",
    "kernels",
    "kernels_from",
    "lib",
    "per_kernels",
]
