"""NVRTC: compile the GPU kernels to CUBIN and read the compiler's resource report.

The only module that talks to NVRTC (through cuda-python's cuda.bindings.nvrtc). It needs no GPU and
no driver, so every configuration is compiled and checked for every target architecture in CI.
Results are cached on disk by (source, options, architecture, NVRTC version).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from harness.args import at_least
from harness.native import cache_dir
from im2win.cuda.config import AUTOTUNE_CANDIDATES, VARIANTS, TileConfig
from im2win.cuda.launch import for_shape, split_slices
from im2win.cuda.source import kernel_source
from im2win.shapes import PAPER_GPU_LAYERS, ConvShape

ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
KERNELS = (
    "im2win_window",
    "im2win_window_rows",
    "im2win_filter",
    "im2win_conv",
    "splitk_reduce",
    "direct_conv",
)


class NvrtcUnavailable(RuntimeError):
    """cuda-python's NVRTC bindings or the NVRTC library are missing."""


class CompileError(RuntimeError):
    """NVRTC rejected the source or the options."""


@dataclass(frozen=True)
class Resources:
    """ptxas' report for one kernel on one architecture."""

    kernel: str
    arch: str
    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Compiled:
    arch: str
    options: tuple[str, ...]
    cubin: bytes
    log: str
    resources: dict[str, Resources]


@functools.cache
def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise NvrtcUnavailable(
            "cuda-python is not installed: pip install cuda-bindings "
            "nvidia-cuda-nvrtc (see constraints.txt)"
        ) from exc
    try:
        _check(nvrtc, nvrtc.nvrtcVersion())
    except Exception as exc:  # the bindings load libnvrtc lazily
        raise NvrtcUnavailable(
            f"the NVRTC library cannot be loaded ({exc}): pip install nvidia-cuda-nvrtc"
        ) from exc
    return nvrtc


def _check(nvrtc, result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise CompileError(f"NVRTC: {nvrtc.nvrtcGetErrorString(err)[1].decode()}")
    return rest[0] if len(rest) == 1 else rest


def nvrtc_version() -> str:
    nvrtc = _nvrtc()
    major, minor = _check(nvrtc, nvrtc.nvrtcVersion())
    return f"{major}.{minor}"


@functools.cache
def supported_archs() -> tuple[str, ...]:
    """The architectures this NVRTC compiles for (sm_75, sm_80, ...)."""
    nvrtc = _nvrtc()
    return tuple(f"sm_{n}" for n in _check(nvrtc, nvrtc.nvrtcGetSupportedArchs()))


def check_arch(arch: str) -> None:
    """ValueError, one line, unless this NVRTC compiles for `arch` (sm_90, or sm_90a for its
    architecture-specific features)."""
    if not re.fullmatch(r"sm_\d+a?", arch):
        raise ValueError(f"unknown architecture {arch!r}; expected like {', '.join(ARCHS)}")
    if arch.rstrip("a") not in supported_archs():
        raise ValueError(
            f"NVRTC {nvrtc_version()} does not compile for {arch}; it compiles for "
            f"{', '.join(supported_archs())}"
        )


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas_log(log: str) -> dict[str, Resources]:
    """The per-kernel resource report in ptxas' verbose output (-Xptxas -v)."""
    out, current, arch, frame = {}, None, None, (0, 0, 0)
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current, arch, frame = m.group(1), m.group(2), (0, 0, 0)
        elif (m := _FRAME.search(line)) and current:
            frame = tuple(int(g) for g in m.groups())
        elif (m := _USED.search(line)) and current:
            out[current] = Resources(
                current, arch, int(m.group(1)), int(m.group(2) or 0), frame[1], frame[2], frame[0]
            )
            current = None
    return out


def _compile(source: str, options: list[str]) -> tuple[bytes, str]:
    nvrtc = _nvrtc()
    prog = _check(nvrtc, nvrtc.nvrtcCreateProgram(source.encode(), b"im2win.cu", 0, [], []))
    try:
        opts = [o.encode() for o in options]
        result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        size = _check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog))
        log = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetProgramLog(prog, log))
        log_text = log.decode(errors="replace").rstrip("\x00 ")
        if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CompileError(f"NVRTC could not compile im2win.cu with {options}:\n{log_text}")
        size = _check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog))
        cubin = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetCUBIN(prog, cubin))
        return cubin, log_text
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def compile_options(config: TileConfig, arch: str) -> list[str]:
    return [f"--gpu-architecture={arch}", "--std=c++17", "--ptxas-options=-v", *config.options()]


def compile_cubin(config: TileConfig, arch: str) -> Compiled:
    """CUBIN and resource report of the kernels for `config` on `arch` (cached on disk)."""
    check_arch(arch)
    problems = config.problems()
    if problems:
        raise ValueError(f"tile configuration {config} cannot be compiled: {'; '.join(problems)}")
    options = compile_options(config, arch)
    source = kernel_source()
    key = hashlib.sha256("\0".join([source, *options, nvrtc_version()]).encode()).hexdigest()[:20]
    folder = cache_dir() / "cuda"
    cubin_path, log_path = folder / f"{key}.cubin", folder / f"{key}.log"
    if cubin_path.exists() and log_path.exists():
        cubin, log = cubin_path.read_bytes(), log_path.read_text()
    else:
        cubin, log = _compile(source, options)
        folder.mkdir(parents=True, exist_ok=True)
        for path, data in ((log_path, log.encode()), (cubin_path, cubin)):
            fd, tmp = tempfile.mkstemp(dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
    return Compiled(arch, tuple(options), cubin, log, parse_ptxas_log(log))


def kernels_for(
    configs: Iterable[TileConfig], shapes: Iterable[ConvShape], sms: int | None
) -> set[TileConfig]:
    """The compiled kernels that running each configuration on each shape takes, on a GPU of
    `sms` multiprocessors (as im2win.cuda.runtime.conv2d resolves them: the configuration made for
    the shape, compiled for split-K where the shape splits)."""
    out = set()
    for shape in shapes:
        for config in configs:
            config = for_shape(config, shape)
            out.add(config.kernel(split_slices(shape, config, sms)))
    return out


def prebuild(kernels: Iterable[TileConfig], arch: str, jobs: int | None = None) -> int:
    """Compile `kernels` for `arch` into the disk cache, `jobs` NVRTC processes at a time, so that
    a later run finds them there; returns how many."""
    kernels = sorted(set(kernels), key=repr)
    with ProcessPoolExecutor(max_workers=jobs or os.cpu_count()) as pool:
        list(pool.map(compile_cubin, kernels, [arch] * len(kernels)))
    return len(kernels)


def main(argv: list[str] | None = None) -> int:
    """python -m im2win.cuda.compile: fill the kernel cache before a GPU run."""
    parser = argparse.ArgumentParser(
        prog="python -m im2win.cuda.compile",
        description="Compile, in parallel, every kernel that `repro run im2win-gpu` and the "
        "autotuner's known-good tiles take on the papers' layers, into the disk cache they read "
        "(NVRTC alone compiles one at a time). Needs no GPU.",
    )
    parser.add_argument("--arch", required=True, help="target architecture, e.g. sm_90")
    parser.add_argument(
        "--sms", type=at_least(1), default=None, help="the GPU's multiprocessors (for split-K)"
    )
    parser.add_argument("--batch", type=at_least(1), default=128, help="batch of the layers")
    parser.add_argument(
        "--jobs", type=at_least(1), default=None, help="processes (default: every CPU)"
    )
    args = parser.parse_args(argv)
    try:
        check_arch(args.arch)
    except ValueError as exc:
        parser.error(f"--arch {args.arch}: {exc}")
    except NvrtcUnavailable as exc:
        raise SystemExit(f"compile: {exc}") from None
    shapes = [shape.with_batch(args.batch) for shape in PAPER_GPU_LAYERS.values()]
    configs = [*VARIANTS.values(), *AUTOTUNE_CANDIDATES]
    try:
        count = prebuild(kernels_for(configs, shapes, args.sms), args.arch, args.jobs)
    except (NvrtcUnavailable, CompileError) as exc:
        raise SystemExit(f"compile: {str(exc).splitlines()[0]}") from None
    print(f"{count} kernels compiled for {args.arch} in {cache_dir() / 'cuda'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
