"""The x86-64 levels (SSE2, SSE4.2, AVX2, AVX-512): what each needs of the CPU, which this host
runs, and holding PyTorch's own CPU code to one of them.

A host runs its own level and every narrower one. hold_torch holds oneDNN's convolutions, ATen's
kernels and MKL's GEMM to one level, so that `repro run im2win-cpu --isa x86-64-v3` times the AVX2
code of every implementation side by side on a host with AVX-512: what a machine without it runs.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Level:
    name: str  # the x86-64 microarchitecture level, as -march takes it
    simd: str
    lanes: int  # FP32 lanes of the kernel's vectors on this level
    flags: tuple[str, ...]  # /proc/cpuinfo flags it needs beyond the level below
    # PyTorch's libraries held to this level (hold_torch): oneDNN's ISA name as its verbose
    # output spells it (None: oneDNN has no code for the level), ATen's CPU capability and MKL's
    # instruction set, each as its environment variable takes it
    onednn: str | None = None
    aten: str = "default"
    mkl: str = "SSE4_2"


LEVELS = {
    level.name: level
    for level in (
        Level("x86-64", "SSE2", 4, ("sse2",)),
        Level("x86-64-v2", "SSE4.2", 4, ("ssse3", "sse4_1", "sse4_2", "popcnt"), onednn="sse41"),
        Level(
            "x86-64-v3",
            "AVX2 + FMA",
            8,
            ("avx", "avx2", "fma", "bmi2", "movbe"),
            onednn="avx2",
            aten="avx2",
            mkl="AVX2",
        ),
        Level(
            "x86-64-v4",
            "AVX-512",
            16,
            ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
            onednn="avx512_core",
            aten="avx512",
            mkl="AVX512",
        ),
    )
}


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def x86_host() -> bool:
    """Whether this host is x86-64, where the levels apply."""
    return platform.machine().lower() in ("x86_64", "amd64")


def runs_here(level: str) -> bool:
    """Whether this CPU runs code built for -march=`level` (an x86-64 host with its flags and those of
    every level below)."""
    if not x86_host():
        return False
    names = list(LEVELS)
    needed = {f for name in names[: names.index(level) + 1] for f in LEVELS[name].flags}
    return needed <= _cpu_flags()


def check_runs_here(level: str) -> None:
    """ValueError, in one line naming the levels this CPU runs, unless it runs `level`."""
    if level not in LEVELS:
        raise ValueError(f"unknown x86 level {level!r}; choose one of {', '.join(LEVELS)}")
    if not runs_here(level):
        here = [name for name in LEVELS if runs_here(name)]
        raise ValueError(
            f"this CPU does not run {level} ({LEVELS[level].simd}); it runs "
            + (", ".join(here) if here else f"none of the x86 levels ({platform.machine()})")
        )


# oneDNN's ISA families, narrowest first, as its verbose output begins their names
_ONEDNN_ISAS = ("sse41", "avx2", "avx512", "amx")


def _onednn_rank(isa: str) -> int:
    return next(i for i, family in enumerate(_ONEDNN_ISAS) if isa.startswith(family))


def hold_torch(level: str) -> dict:
    """Hold PyTorch's CPU code to x86 `level` in this process: oneDNN (ONEDNN_MAX_CPU_ISA), ATen's
    vectorised kernels (ATEN_CPU_CAPABILITY) and MKL (MKL_ENABLE_INSTRUCTIONS). Each reads its
    variable once, when first used, so this must come before the process's first convolution:
    it then checks ATen's capability, and the ISA of the convolution oneDNN runs, and raises a
    one-line ValueError (the variables restored) if either is wider. MKL cannot be asked; its
    variable is set and recorded only. Returns what was set and what was seen, for a run record."""
    check_runs_here(level)
    spec = LEVELS[level]
    if spec.onednn is None:
        raise ValueError(
            f"PyTorch cannot be held to {level} ({spec.simd}): oneDNN has no code below SSE4.1; "
            "choose x86-64-v2 or wider"
        )
    import torch

    wanted = {
        "ONEDNN_MAX_CPU_ISA": spec.onednn.upper(),
        "ATEN_CPU_CAPABILITY": spec.aten,
        "MKL_ENABLE_INSTRUCTIONS": spec.mkl,
    }
    before = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    aten = torch.backends.cpu.get_cpu_capability()
    onednn = _onednn_convolution_isa(torch)
    if (
        aten.lower() != spec.aten
        or onednn is None
        or _onednn_rank(onednn) > _onednn_rank(spec.onednn)
    ):
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        raise ValueError(
            f"PyTorch had chosen its CPU code before it could be held to {level} (ATen "
            f"{aten}, oneDNN {onednn or 'unknown'}): run the command in a fresh process, or set "
            + " ".join(f"{k}={v}" for k, v in wanted.items())
            + " before it starts"
        )
    return {"environment": wanted, "aten_capability": aten, "onednn_convolution": onednn}


def _onednn_convolution_isa(torch) -> str | None:
    """The ISA of the implementation oneDNN runs for a small convolution (its verbose line, which
    oneDNN writes to the C stdout; read from a temporary file put in its place), e.g. "avx2"."""
    import torch.nn.functional as F

    x, w = torch.ones(2, 16, 10, 10), torch.ones(16, 16, 3, 3)  # batch 2: ATen hands it to oneDNN
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as out:
        try:
            os.dup2(out.fileno(), 1)
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                F.conv2d(x, w)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        out.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
    for line in lines:
        if ",convolution," in line:
            found = re.search(r"(sse41|avx2|avx512\w*|amx\w*)", line.split(",convolution,")[1])
            return found.group(1) if found else None
    return None
