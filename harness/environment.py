"""What a result was measured on: hardware, software versions and the code's exact revision."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import psutil
import torch

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "segment-anything",
    "matplotlib",
    "asv",
    "pytest-benchmark",
    "cuda-python",
    "pyopencl",
    "opentuner",
)
REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The widest SIMD a CPU flag in /proc/cpuinfo says the CPU has, widest first.
_SIMD = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def _cache_bytes(level: int, kinds: tuple[str, ...]) -> int | None:
    """The size of cpu0's level-`level` cache of a type in `kinds`, from Linux's sysfs (None
    elsewhere): Python's os.sysconf has no names for caches."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if int((index / "level").read_text()) != level:
                continue
            if (index / "type").read_text().strip() not in kinds:
                continue
            size = (index / "size").read_text().strip()
            return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except (OSError, ValueError):
            continue
    return None


def cpu_details() -> dict:
    """What a CPU model name does not tell apart ("AMD EPYC" is every Zen generation in a VM): the
    family, model and stepping numbers, the widest SIMD, the per-core L1 data and L2 caches, and
    the last-level cache cpu0 sees (its share: the L3 of its core complex)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return {
        "vendor": fields.get("vendor_id"),
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "stepping": fields.get("stepping"),
        "simd": next((name for flag, name in _SIMD if flag in flags), None),
        "l1d_bytes": _cache_bytes(1, ("Data",)),
        "l2_bytes": _cache_bytes(2, ("Unified", "Data")),
        "l3_bytes": _cache_bytes(3, ("Unified",)),
    }


def describe_cpu(env: dict) -> str:
    """The CPU of a run record's environment in words: the model name, and where the record has
    them (runs since 2026-12-02), its family/model numbers, SIMD and caches."""
    d = env.get("cpu_details") or {}
    parts = []
    if d.get("family") is not None:
        parts.append(f"family {d['family']} model {d['model']}")
    if d.get("simd"):
        parts.append(d["simd"])
    caches = [
        f"{name} {d[key] // 1024} KiB"
        for name, key in (("L1d", "l1d_bytes"), ("L2", "l2_bytes"))
        if d.get(key)
    ]
    if caches:
        parts.append(", ".join(caches) + " a core")
    return env.get("cpu_model", "unknown CPU") + (f" ({'; '.join(parts)})" if parts else "")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """Commit of the code that ran and whether the work tree had uncommitted changes.

    Only when the project's own folder is the top of a git work tree: an exported copy inside some
    other repository (or an installed copy) records "unknown", never the enclosing repository's commit.
    Whoever made a copy may state the commit it was made from in $IM2WIN_SOURCE_COMMIT: it is
    recorded as "declared_commit", apart from the commit git vouches for, with or without a work
    tree (a copy that carries an older .git, as the GPU machines' did, records that commit, dirty).
    """
    declared = os.environ.get("IM2WIN_SOURCE_COMMIT")
    stated = {"declared_commit": declared} if declared else {}
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != REPO:
        return {"commit": "unknown", "dirty": None} | stated
    commit = _git("rev-parse", "HEAD")
    # results/ is what runs write: rendered files changed by an earlier run do not make code dirty
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": commit, "dirty": None if status is None else bool(status)} | stated


def _versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _gpu() -> dict | None:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "count": torch.cuda.device_count(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": _nvidia_smi("driver_version"),
    }


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


@functools.cache
def _static() -> dict:
    return {
        "cpu_model": _cpu_model(),
        "cpu_details": cpu_details(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": _versions(),
        "torch_config": {
            "mkldnn": torch.backends.mkldnn.is_available(),
            "mkl": torch.backends.mkl.is_available(),
            "openmp": torch.backends.openmp.is_available(),
        },
        "gpu": _gpu(),
    }


def capture(threads: int | None = None) -> dict:
    """The environment of this run; `threads` is the thread count the measurements used."""
    env = dict(_static())
    env["threads"] = threads if threads is not None else torch.get_num_threads()
    env["git"] = git_state()
    env["env_vars"] = {
        k: os.environ[k]
        for k in (
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_CORETYPE",
            "CXX",
            # what holds PyTorch's CPU code to an instruction set (im2win.cpu.levels.hold_torch)
            "ONEDNN_MAX_CPU_ISA",
            "DNNL_MAX_CPU_ISA",
            "ATEN_CPU_CAPABILITY",
            "MKL_ENABLE_INSTRUCTIONS",
        )
        if k in os.environ
    }
    return env
