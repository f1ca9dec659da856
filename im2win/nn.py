"""im2win inside a network: a torch.nn.Conv2d that runs im2win.conv2d, and the swap of a model's
convolutions for it.

    model = torchvision.models.resnet18().eval()
    im2win.nn.convert(model)  # every Conv2d im2win can run, in place
    with torch.inference_mode():
        y = model(x)

Forward only, as im2win.conv2d: under grad mode with parameters that require grad it refuses with
ValueError; run the model under torch.no_grad() or torch.inference_mode().

Each im2win.nn.Conv2d keeps its weight packed for im2win (im2win.pack_filter) from its first
forward on, and packs it again when the weight changes (another tensor, or the same one changed in
place: its version counter), so that a call does not pack the filter, which im2win.conv2d does in
every call otherwise. The packing takes about the weight's memory again (K rounded up to the
micro-kernel's channel block); convert(model, pack_weight=False) keeps none. A change made through
`weight.data`, which PyTorch's version counter does not count, is not seen: after one, call
unpack(model), and the next forward packs anew.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from im2win.conv import conv2d
from im2win.implementations import IMPLEMENTATIONS
from im2win.packed import PackedCall, PackedFilter, repack


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d whose forward is im2win.conv2d with `impl` (default "im2win"), with the
    same parameters and state_dict. Its output is channels_last memory (im2win's), which the
    layers after it (batch norm, ReLU, pooling) keep and the next im2win convolution reads as it
    is."""

    impl: str = "im2win"
    pack_weight: bool = True  # keep the weight packed across calls (impl "im2win" on the CPU)
    _packed: tuple | None = None  # packed.repack's (weight, data pointer, version, PackedFilter)
    _call: PackedCall | None = None  # the last call over _packed, planned for the next alike

    def __getstate__(self):
        """The module as it copies and pickles: without its packed weight, which its first forward
        after packs anew (a copy's weight is another tensor)."""
        state = dict(super().__getstate__())
        state.pop("_packed", None)
        state.pop("_call", None)
        return state

    def _conv_forward(self, input, weight, bias):
        call = self._call
        if (
            call is not None
            and self.impl == "im2win"
            and self.pack_weight
            and call.fits(self._packed, input, weight, bias, self.stride, self.padding)
        ):
            return call(input, bias)
        packed = self._packed_weight(input, weight)
        out = conv2d(input, weight, bias, self.stride, self.padding, impl=self.impl, packed=packed)
        self._call = (
            None
            if packed is None
            else PackedCall.plan(self._packed, input, bias, self.stride, self.padding)
        )
        return out

    def _packed_weight(self, input, weight) -> PackedFilter | None:
        """`weight` packed for im2win, from the last call's packing while the weight is the same
        tensor, at the same place and version, for the same kernels; None where this call does
        not run im2win over a packed filter (another impl, CUDA, a weight that needs grad, or one
        made under inference_mode, which keeps no version)."""
        usable = (
            self.pack_weight
            and self.impl == "im2win"
            and isinstance(input, torch.Tensor)
            and input.device.type == "cpu"
            and weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and weight.dim() == 4
            and not weight.is_inference()
            and not (torch.is_grad_enabled() and weight.requires_grad)
        )
        if not usable:
            return None
        self._packed = repack(self._packed, weight)
        return self._packed[3]


def unpack(model: torch.nn.Module) -> int:
    """Drop the packed weight of every im2win.nn.Conv2d in `model`, so that each packs its weight
    anew on its next forward: after changing weights in a way their version counter does not see
    (through `weight.data`). Returns how many held one."""
    held = [m for m in model.modules() if isinstance(m, Conv2d) and m._packed is not None]
    for m in held:
        m._packed = m._call = None
    return len(held)


def runs_on_im2win(module: torch.nn.Module) -> bool:
    """Whether `module` is a plain torch.nn.Conv2d that im2win.conv2d can run: one group, no
    dilation, zero padding, float32."""
    return (
        type(module) is torch.nn.Conv2d
        and module.groups == 1
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and module.weight.dtype == torch.float32
    )


def convert(model: torch.nn.Module, impl: str = "im2win", pack_weight: bool = True) -> int:
    """Swap, in place, every torch.nn.Conv2d of `model` that im2win can run (runs_on_im2win) for
    a Conv2d running `impl` that shares its parameters. Others (grouped, dilated, other padding
    modes or dtypes, subclasses) stay as they are; hooks on a swapped module are not carried over.
    pack_weight: each swapped module keeps its weight packed across calls (see the module's
    docstring). Returns how many were swapped."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {', '.join(IMPLEMENTATIONS)}")
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if runs_on_im2win(child):
                conv = Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    bias=child.bias is not None,
                    device="meta",  # no parameters of its own: it takes child's below
                )
                conv.weight, conv.bias = child.weight, child.bias
                conv.impl = impl
                conv.pack_weight = pack_weight
                conv.train(child.training)
                setattr(parent, name, conv)
                swapped += 1
    return swapped


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model`, in eval mode, whose batch norms that take a convolution's output alone are
    folded into that convolution's weight and bias, for inference: the same outputs, a pass over
    each such convolution's output fewer (torch.fx.experimental.optimization.fuse, which traces
    the model with torch.fx; as torch.compile's frozen weights do). Convert the copy to run im2win:
    convert(fold_batch_norms(model)).

    Args:
        model: a torch.nn.Module in eval mode that torch.fx can trace, not yet converted.

    Returns:
        A torch.fx.GraphModule: the copy, without the folded batch norms.

    Raises:
        ValueError: the model is in training mode, already converted, or torch.fx cannot trace it.
    """
    from torch.fx.experimental.optimization import fuse
    from torch.fx.proxy import TraceError

    if model.training:
        raise ValueError(
            "fold_batch_norms folds the running statistics of a model in eval mode: call "
            "model.eval() first"
        )
    if any(isinstance(m, Conv2d) for m in model.modules()):
        raise ValueError(
            "fold_batch_norms folds into torch.nn.Conv2d layers, and this model's are im2win's "
            "already: fold first, then convert (convert(fold_batch_norms(model)))"
        )
    try:
        return fuse(model)
    except TraceError as error:
        raise ValueError(
            f"fold_batch_norms traces the model with torch.fx, which cannot trace this one "
            f"({error}); convert the model without folding"
        ) from None


NETWORK_FORMS = (
    "torch",
    "torch_cl_net",
    "torch_compiled",
    "im2win_unpacked",
    "im2win",
    "im2win_folded",
)
"""How the network benchmarks run a model (prepare): PyTorch's three forms, and im2win keeping no
packed weights, as convert leaves it, and with the batch norms folded first."""


def prepare(
    model: torch.nn.Module, x: torch.Tensor, impl: str
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """`model` and its input `x` as a user runs them with `impl`, for inference:
      * "torch": as they are (PyTorch's NCHW path);
      * "torch_cl_net": both in channels_last memory (model.to(memory_format=...)), as a
        channels_last network runs;
      * "torch_compiled": that channels_last model compiled by torch.compile (Inductor) with its
        weights frozen (torch._inductor.config.freezing: batch norms folded into the
        convolutions, oneDNN's weights packed ahead): PyTorch's strongest form for inference on
        the CPU. Compiled here, on `x`, under torch.inference_mode() (how it is then called):
        seconds to a minute;
      * "im2win_unpacked": the convolutions swapped for im2win (convert) with no packed weights
        kept, so each call packs its filter;
      * "im2win_folded": convert(fold_batch_norms(model)), the batch norms folded first (a copy);
      * any implementation id: the model's convolutions swapped for it (convert).
    The model is changed in place (but for im2win_folded's copy); returns what to call and its
    input."""
    if impl == "torch":
        return model, x
    if impl in ("torch_cl_net", "torch_compiled"):
        cl = torch.channels_last
        model, x = model.to(memory_format=cl), x.contiguous(memory_format=cl)
        if impl == "torch_compiled":
            import torch._inductor.config as inductor

            model = torch.compile(model)
            with inductor.patch(freezing=True), torch.inference_mode():
                model(x)  # compiles and freezes
        return model, x
    if impl == "im2win_unpacked":
        convert(model, "im2win", pack_weight=False)
    elif impl == "im2win_folded":
        model = fold_batch_norms(model)
        convert(model)
    else:
        convert(model, impl)
    return model, x


__all__ = [
    "NETWORK_FORMS",
    "Conv2d",
    "convert",
    "fold_batch_norms",
    "prepare",
    "runs_on_im2win",
    "unpack",
]
