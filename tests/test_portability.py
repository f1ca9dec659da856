"""The CPU kernels and the FMA probe beyond x86: they build for AArch64 (64-bit ARM: Graviton, Grace,
Ampere, Linux on Apple silicon) and every convolution entry point matches a float64 convolution there,
run under qemu-user. tests/native/kernel_check.cpp does the checking in C++, so no ARM Python is
needed; it runs on this host too, beside the Python tests of the same entry points."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import mca, native
from harness.peak import SOURCE as PEAK_SOURCE
from im2win.cpu import SOURCE as KERNEL_SOURCE
from im2win.cpu import aarch64

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "native" / "kernel_check.cpp"
CROSS = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
AARCH64 = "-march=armv8-a"  # the baseline every AArch64 core runs (NEON included)

needs_cross = pytest.mark.skipif(
    shutil.which(CROSS) is None,
    reason=f"no {CROSS} on PATH (Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu)",
)
needs_qemu = pytest.mark.skipif(
    shutil.which(QEMU) is None,
    reason=f"no {QEMU} on PATH (Debian/Ubuntu: apt-get install qemu-user)",
)


def _compile(compiler: str, *args: str) -> None:
    proc = subprocess.run([compiler, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _run_check(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[-1] == "0 failed"
    checked = {line.split(": ")[0].split(" threads=")[1].split(" ", 1)[1] for line in lines[:-1]}
    assert {  # every entry point, the window planes path included (the deep shapes of few pixels)
        "im2win_conv_fused",
        "im2win_conv_whole",
        "im2win_conv_planes",
        "im2win_conv_prepacked",
        "im2win_transform_nhwc + im2win_conv_nhwc",
        "im2win_transform_nchw + im2win_conv_nchw",
        "direct_conv_nchw",
        "direct_conv_nhwc",
    } <= checked


def test_every_entry_point_matches_float64_from_cpp_on_this_host(tmp_path):
    exe = tmp_path / "kernel_check"
    flags = [f for f in native.flags_for() if f not in ("-shared", "-fPIC")]
    _compile(native.find_compiler(), *flags, f"-I{ROOT}", str(CHECK), "-o", str(exe))
    _run_check([str(exe)])


@needs_cross
@pytest.mark.parametrize("source", [KERNEL_SOURCE, PEAK_SOURCE], ids=lambda p: p.name)
def test_builds_for_aarch64_without_warnings(source, tmp_path):
    flags = [AARCH64 if f == "-march=native" else f for f in native.CXXFLAGS]
    _compile(CROSS, *flags, "-Wall", "-Werror", str(source), "-o", str(tmp_path / "lib.so"))


@needs_cross
@needs_qemu
def test_every_entry_point_matches_float64_on_aarch64(tmp_path):
    exe = tmp_path / "kernel_check"
    _compile(CROSS, "-O2", AARCH64, "-fopenmp", "-std=c++17", "-static", f"-I{ROOT}", str(CHECK),
             "-o", str(exe))  # fmt: skip
    _run_check([QEMU, str(exe)])


@needs_cross
def test_aarch64_main_loop_keeps_its_block_in_registers():
    """The register block's own main loop (the tallest tile's), read from the AArch64 assembly as
    the x86 levels' are: 8 rows, 16 multiply-adds a step (fmla by element), 9 loads, no stack
    access (a spilled accumulator costs a load and a store a step)."""
    loop = aarch64.main_loop()
    assert (loop.rows, loop.multiply_adds, loop.vector_width) == (8, 16, "4s")
    assert (loop.loads, loop.stack_accesses, loop.gpr_vector_moves) == (9, 0, 0)
    # the reader sees a spill where there is one
    assert aarch64.main_loop("12x2").stack_accesses > 0


@needs_cross
def test_aarch64_block_models_near_the_peak_of_each_neoverse(capsys):
    if mca.missing_reason():
        pytest.skip(mca.missing_reason())
    modelled = aarch64.model()
    source = [e for e in modelled["entries"] if e.get("source_block")]
    assert {e["cpu"] for e in source} == set(aarch64.CPUS)
    assert all(e["fraction_of_model_peak"] > 0.9 for e in source)
    aarch64.main(["--model"])
    out = capsys.readouterr().out
    assert "| aarch64 | NEON |" in out and "8x2 (the source's) | neoverse-v2 |" in out
