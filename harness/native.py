"""Compile a C++ source file for this host and load it with ctypes, cached after the first build.

The only module that runs the C++ compiler. Flags: -O3 -march=native -fopenmp (OpenMP and the widest
SIMD the host has; -mcpu=native on AArch64), or another -march to build or inspect the code of an
x86 level this host may lack. The cache key covers the source, the flags, the compiler's version
and the host's CPU, so a cache directory shared between different machines never hands out a
library built for another CPU.
Builds are written to a temporary file and renamed into place, so a crashed or concurrent build
never leaves a broken library behind.

Environment:
    CXX: the compiler (default: the first of c++, g++, clang++ on PATH).
    IM2WIN_CACHE_DIR: where libraries are kept (default: $XDG_CACHE_HOME/im2win or ~/.cache/im2win).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

CXXFLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-std=c++17")


class CompilerError(RuntimeError):
    """No usable C++ compiler, or the build failed."""


def find_compiler() -> str:
    """The C++ compiler to use: $CXX, else the first of c++, g++, clang++ on PATH."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    raise CompilerError(
        f"no C++ compiler found (looked for {', '.join(candidates)}): the CPU kernels are compiled "
        "on first use. Install one (Debian/Ubuntu: apt-get install g++) or point CXX at it."
    )


def cache_dir() -> Path:
    if os.environ.get("IM2WIN_CACHE_DIR"):
        return Path(os.environ["IM2WIN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "im2win"


@functools.cache
def _host_id() -> str:
    """CPU model and feature flags: what -march=native depends on."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))][:2]
        return "\n".join(keep)
    except OSError:
        return platform.processor() + platform.machine()


@functools.cache
def _compiler_version(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else compiler


def aarch64_host() -> bool:
    """Whether this host is 64-bit ARM (Linux names it aarch64, macOS arm64)."""
    return platform.machine().lower() in ("aarch64", "arm64")


def flags_for(march: str = "native", defines: tuple[str, ...] = ()) -> tuple[str, ...]:
    """CXXFLAGS with -march=`march` (e.g. x86-64-v3 for AVX2, x86-64-v4 for AVX-512) and a -D for
    each of `defines` ("NAME=VALUE"). On an AArch64 host, native is -mcpu=native: GCC's
    -march=native there picks the instructions but not the core's tuning, and older clang takes
    only -mcpu."""
    arch = "-mcpu=native" if march == "native" and aarch64_host() else f"-march={march}"
    march_flags = tuple(arch if f == "-march=native" else f for f in CXXFLAGS)
    return march_flags + tuple(f"-D{d}" for d in defines)


def _compile(compiler: str, flags: tuple[str, ...], source: Path, out: str) -> None:
    proc = subprocess.run(
        [compiler, *flags, str(source), "-o", out], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise CompilerError(_build_failure(compiler, source, proc.stderr))


def build_log(source: Path) -> Path:
    """Where a failed build of `source` leaves the compiler's whole output."""
    return cache_dir() / f"{source.stem}-build-error.log"


def _build_failure(compiler: str, source: Path, stderr: str) -> str:
    """One line: the compiler's first error, what to do where it is a known one (no OpenMP), and
    the file that keeps its whole output."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    first = next((ln for ln in lines if "error" in ln), lines[0] if lines else "no output")
    hint = ""
    if "openmp" in stderr.lower() or "omp.h" in stderr:
        hint = (
            "; this compiler builds no OpenMP: install g++ (Debian/Ubuntu: apt-get install g++) "
            "or point CXX at a compiler that does (on macOS, Apple's clang does not: run the "
            "suite in a Linux container)"
        )
    log = build_log(source)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(stderr)
        where = f" (the compiler's whole output: {log})"
    except OSError:
        where = ""
    return f"compiling {source.name} with {compiler} failed: {first}{hint}{where}"


def compiler_version() -> str:
    """The first line of the compiler's --version."""
    return _compiler_version(find_compiler())


def assembly(
    source: Path, march: str = "native", defines: tuple[str, ...] = (), compiler: str | None = None
) -> str:
    """The assembly the compiler makes of `source` for -march=`march` (not cached): for reading the
    code of an instruction set this host may not run. `compiler`: another than find_compiler's (a
    cross compiler: aarch64-linux-gnu-g++ with march armv8.2-a)."""
    compiler = compiler or find_compiler()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.s")
        _compile(compiler, (*flags_for(march, defines), "-S"), source, out)
        return Path(out).read_text()


def build(source: Path, flags: tuple[str, ...] = CXXFLAGS) -> Path:
    """Compile `source` into a shared library (or reuse the cached one) and return its path."""
    compiler = find_compiler()
    key = hashlib.sha256()
    for part in (
        source.read_bytes(),
        " ".join(flags).encode(),
        _compiler_version(compiler).encode(),
        _host_id().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    target = cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        _compile(compiler, flags, source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def load(source: Path, march: str = "native", defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Build (if needed) and load `source` for -march=`march` with -D`defines`; one handle per
    source, march and defines per process. A march whose instructions this CPU lacks loads, then
    dies with SIGILL when run."""
    import torch  # noqa: F401  (load torch's OpenMP runtime first, so both share one thread pool)

    return ctypes.CDLL(str(build(source, flags_for(march, defines))))
