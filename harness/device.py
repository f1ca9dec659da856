"""Which device a run uses: a user's `--device` string resolved to a concrete torch.device."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` as a torch.device with an index when it is a GPU.

    `auto` is the GPU when PyTorch sees one, else the CPU. `cuda` without an index means this
    process's GPU: cuda:LOCAL_RANK under torchrun, else the current device. A CUDA device becomes
    the current one (`torch.cuda.set_device` needs the index; a bare "cuda" is refused by it).

    Raises:
        ValueError: an unknown device name, or a GPU that PyTorch does not see (one line each).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"--device {name!r}: unknown device; use cpu, cuda, cuda:N or auto"
        ) from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ValueError(f"--device {name!r}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name}: PyTorch sees no CUDA GPU here; use --device cpu")
    index = device.index
    if index is None:
        local = os.environ.get("LOCAL_RANK")
        index = int(local) if local is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise ValueError(f"--device {name}: GPU {index} does not exist; PyTorch sees {count}")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device) -> None:
    """ValueError unless `precision` is known and usable on `device` (bf16 autocast: CUDA only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type != "cuda":
        raise ValueError("--precision bf16 runs on a CUDA GPU (autocast); use fp32 on the CPU")


def autocast(device: torch.device, precision: str = "fp32"):
    """The context a forward pass runs in: bf16 autocast on CUDA for "bf16", plain fp32 else."""
    check_precision(precision, device)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message` of an exception, for a one-line record or report."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def gpu_lost() -> str | None:
    """After GPU work raised: None where the CUDA context still runs work (the failure was that
    call's alone, e.g. a launch the GPU refused or memory), else why it does not (a sticky error,
    such as an illegal address, fails every later call too)."""
    try:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    except Exception as lost:  # noqa: BLE001 - any error here means the context is gone
        return first_line(lost)
    return None
