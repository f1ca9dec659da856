"""A filter packed for im2win ahead of the calls that convolve with it: what im2win otherwise
packs in every call (im2win.pack_filter; im2win.conv2d's packed=; im2win.nn.Conv2d keeps its
weight so)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from im2win import cpu
from im2win.cpu import lib
from im2win.plan import STREAMED, prepacked_work_floats
from im2win.shapes import ConvShape
from im2win.streamed import Launch, contiguous_params, kernel_phases
from im2win.validation import tensor_key, validate


@dataclass(frozen=True, eq=False)
class PackedFilter:
    """A filter packed for im2win ahead of the calls that convolve with it (pack_filter): what
    im2win otherwise packs in every call. `data` holds the packed floats, for the kernels it was
    packed for (`kernels`: im2win.cpu.kernels() then) and the filter shape `weight_shape`. Plain
    values and a tensor: it copies and pickles."""

    data: torch.Tensor
    weight_shape: tuple[int, int, int, int]
    kernels: tuple[Path, str, tuple[str, ...]]

    def check(self, weight: torch.Tensor) -> None:
        """A ValueError unless this packing can stand for `weight`: its shape, the kernels now
        loaded. (Its values are the caller's to keep: pack again after changing the weight.)"""
        if tuple(weight.shape) != self.weight_shape:
            raise ValueError(
                f"packed holds a filter of shape {self.weight_shape}, not the weight's "
                f"{tuple(weight.shape)}: pack this weight with im2win.pack_filter(weight)"
            )
        if self.kernels != cpu.kernels():
            raise ValueError(
                "packed was packed for other CPU kernels than those loaded now: pack again with "
                "im2win.pack_filter(weight)"
            )


def packed_filter_floats(shape: ConvShape) -> int:
    """Floats of a filter of `shape` packed by pack_filter (K rounded up to the channel block)."""
    return lib().im2win_packed_filter_floats(shape.k, shape.c, shape.r, shape.s)


def pack_filter(weight: torch.Tensor) -> PackedFilter:
    """`weight` packed for im2win, once for every call that convolves with it:
    im2win.conv2d(x, weight, ..., packed=pack_filter(weight)) then skips the packing each call
    does otherwise, and streams its window bands on every shape (the memory goal's room no longer
    holds the filter). im2win.nn.Conv2d keeps its weight packed so, and packs it again when the
    weight changes.

    Args:
        weight: [K, C, R, S] float32 on the CPU, any strides.

    Returns:
        A PackedFilter: [ceil(K / KB) * KB * C * R * S] floats, KB the micro-kernel's channel block
        (32 with AVX-512, 16 with AVX2, 8 with SSE), block by block, each [S][R][C][KB] (the
        window's order), zero past K; packed by the kernels loaded now (im2win.cpu.kernels()).

    Raises:
        ValueError: weight is not a 4-D float32 CPU tensor.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError("pack_filter takes a 4-D (K, C, R, S) weight tensor")
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(
            f"pack_filter takes a float32 CPU weight, got {weight.dtype} on {weight.device}: "
            "pass weight.float().cpu()"
        )
    k, c, r, s = weight.shape
    handle = lib()
    data = torch.empty(handle.im2win_packed_filter_floats(k, c, r, s))
    with torch.no_grad():
        w = weight.detach().contiguous()
        handle.im2win_pack_filter(
            w.data_ptr(), k, c, r, s, data.data_ptr(), torch.get_num_threads()
        )
    return PackedFilter(data, (k, c, r, s), cpu.kernels())


def im2win_packed(x, packed: PackedFilter, bias, stride, padding) -> tuple[torch.Tensor, dict]:
    """im2win on validated arguments over a filter packed ahead (pack_filter), and its phases as
    im2win_with_phases reports them (no filter packing; always streamed bands)."""
    k, _, r, s = packed.weight_shape
    shape = ConvShape(*x.shape, k, r, s, tuple(stride), tuple(padding))
    out, seconds = prepacked_launch(x, shape).run(x, *contiguous_params(packed.data, bias))
    return out, kernel_phases(seconds) | {"path": f"{STREAMED}, filter packed ahead"}


def prepacked_launch(x, shape: ConvShape) -> Launch:
    """The call of im2win_conv_prepacked for `x` of `shape` (im2win_packed's, PackedCall's and
    conv2d's planned calls of impl im2win_packed): its work buffer is the plan's for the threads
    now."""
    work_floats = prepacked_work_floats(shape, torch.get_num_threads())
    return Launch.of("im2win_conv_prepacked", shape.x_args(x), shape.output_shape(), work_floats)


@dataclass(frozen=True, eq=False)
class PackedCall:
    """im2win over a packed weight (repack's `held`), planned once for the calls after it whose
    arguments are alike (fits): im2win.nn.Conv2d's forward in a network. Such a call does in
    Python no more than allocate its output and work buffer and launch the kernel, not check the
    arguments again, plan the call or read the kernel's phase timers. Alike: the same kind,
    shape, strides, dtype and device of input and bias (or none), the same stride and padding,
    thread count and kernels, the weight the same tensor at the same place and version as when
    packed, and grad mode off."""

    held: tuple  # repack's (weak reference to the weight, data pointer, version, PackedFilter)
    key: tuple  # the arguments' key (key_of)
    launch: Launch

    @staticmethod
    def key_of(x, bias, stride, padding) -> tuple:
        bias_key = None if bias is None else tensor_key(bias)
        return (tensor_key(x), bias_key, stride, padding, torch.get_num_threads(), cpu.kernels())

    @classmethod
    def plan(cls, held: tuple, x, bias, stride, padding) -> PackedCall | None:
        """The call for arguments that im2win.conv2d(x, weight, bias, stride, padding,
        packed=held[3]) has just taken; None where the next calls go through conv2d (an unbatched
        or empty input, a bias that is not contiguous)."""
        if x.dim() != 4 or x.shape[0] == 0 or not (bias is None or bias.is_contiguous()):
            return None
        weight = held[0]()
        pairs = validate(x, weight, bias, stride, padding)  # "same" and "valid" as numbers
        shape = ConvShape.of(x, weight, *pairs)
        return cls(held, cls.key_of(x, bias, stride, padding), prepacked_launch(x, shape))

    def fits(self, held: tuple | None, x, weight, bias, stride, padding) -> bool:
        """Whether this call stands for im2win.conv2d(x, weight, bias, stride, padding, packed=)
        over `held`, the packing the caller holds now."""
        return (
            held is self.held
            and not torch.is_grad_enabled()
            and held[0]() is weight
            and (weight.data_ptr(), weight._version) == held[1:3]
            and weight.shape == held[3].weight_shape
            and self.key == self.key_of(x, bias, stride, padding)
        )

    def __call__(self, x, bias) -> torch.Tensor:
        return self.launch(x, self.held[3].data, bias)


def repack(held: tuple | None, weight: torch.Tensor) -> tuple:
    """`held`, a (weak reference to a weight, its data pointer, its version, its PackedFilter),
    where it still stands for `weight`: the same tensor, at the same place and version, packed by
    the kernels loaded now; else `weight` packed anew in such a tuple. (A change made through
    weight.data does not move the version counter: drop `held` then.)"""
    key = (weight.data_ptr(), weight._version)
    if held and held[0]() is weight and held[1:3] == key and held[3].kernels == cpu.kernels():
        return held
    return (weakref.ref(weight), *key, pack_filter(weight))


_HELD: dict[int, tuple] = {}  # id(weight) -> repack's tuple, dropped with the weight


def packed_for(weight: torch.Tensor) -> PackedFilter:
    """`weight` packed for im2win, on the first call with it and kept while it lives and stays
    unchanged (repack), for callers that hold plain tensors (impl "im2win_packed"); an inference
    tensor, which keeps no version, is packed anew each call."""
    if weight.is_inference():
        return pack_filter(weight)
    key = id(weight)
    held = _HELD.get(key)
    if held is None:
        weakref.finalize(weight, _HELD.pop, key, None)
    _HELD[key] = repack(held, weight)
    return _HELD[key][3]
