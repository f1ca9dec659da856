"""The CPU kernels on every x86 level: each level this host runs is built and checked against the
float64 oracle; AVX-512, where the host lacks it, is checked from its assembly."""

import pytest
import torch

import im2win
from im2win import cpu
from im2win.cpu import CompilerError, isa
from im2win.reference import max_violation

pytestmark = pytest.mark.skipif(not isa.x86_host(), reason="x86 levels: not an x86-64 host")

# The implementations whose kernels are in im2win_cpu.cpp.
NATIVE = ["im2win", "im2win_nhwc", "im2win_nchw", "direct"]
# Odd shapes: K not a multiple of any channel block, pixel counts not a multiple of any tile,
# strides and padding per axis, few and many channels, an empty batch.
SHAPES = [
    ((2, 3, 13, 11), (19, 3, 5, 3), (2, 1), (1, 2)),
    ((1, 17, 9, 10), (37, 17, 3, 3), (1, 1), (1, 1)),
    ((3, 40, 7, 7), (70, 40, 3, 3), (1, 2), (0, 1)),
    ((0, 5, 8, 8), (4, 5, 3, 3), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("level", list(isa.LEVELS))
def test_every_level_this_host_runs_matches_the_oracle(level):
    if not isa.runs_here(level):
        pytest.skip(f"this CPU does not run {level} ({isa.LEVELS[level].simd})")
    torch.manual_seed(0)
    own = cpu.lib()
    with cpu.kernels_from(cpu.SOURCE, level) as handle:
        assert handle.im2win_simd_width() == isa.LEVELS[level].lanes
        for x_shape, w_shape, stride, padding in SHAPES:
            x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
            for impl in NATIVE:
                out = im2win.conv2d(x, w, b, stride, padding, impl=impl)
                assert max_violation(out, x, w, b, stride, padding) <= 1.0, (level, impl, x_shape)
    assert cpu.lib() is own


@pytest.mark.parametrize("level", list(isa.LEVELS))
def test_the_main_loop_of_every_level_keeps_its_tile_in_registers(level):
    """From the compiler's assembly: one pass of the main loop does M x NR multiply-adds (NR = 2
    vectors of output channels) on the level's widest registers, loads one B row and M pixel values
    and stores nothing, and never touches the stack (spills) or parks a pointer in a vector register."""
    try:
        mix = isa.ukernel_loop(level)
    except CompilerError as err:
        pytest.skip(f"the compiler does not build -march={level}: {str(err).splitlines()[-1]}")
    lanes = isa.LEVELS[level].lanes
    assert mix.rows == (12 if lanes == 16 else 6)
    assert mix.multiply_adds == 2 * mix.rows
    assert mix.vector_width == {4: "xmm", 8: "ymm", 16: "zmm"}[lanes]
    assert mix.stores == 0
    assert mix.loads >= 2 + mix.rows
    # AVX-512's 12 row pointers, the panel pointer and the step fill 14 general registers: the
    # loop counts its step up to zero so that no bound needs one more (with a bound, GCC 12 kept a
    # row pointer in a vector register and reloaded the bound from the stack at every step).
    assert mix.stack_accesses == 0 and mix.gpr_vector_moves == 0


def test_the_loop_reader_finds_loops_between_the_marks():
    asm = "\n".join(
        [
            "\t# im2win-ukernel-loop-begin M=2",
            ".L5:",
            "\tvmovups\t(%rsi), %ymm1",
            "\tvbroadcastss\t(%r11,%rax), %ymm2",
            "\tvfmadd231ps\t%ymm2, %ymm1, %ymm14",
            "\tvbroadcastss\t(%r8,%rax), %ymm2",
            "\tvfmadd231ps\t%ymm2, %ymm1, %ymm13",
            "\tmovq\t8(%rsp), %rdx",
            "\tvmovq\t%xmm29, %rdx",
            "\tvmovups\t%ymm3, (%rdx)",
            "\taddq\t$4, %rax",
            "\tjne\t.L5",
            "\t# im2win-ukernel-loop-end M=2",
            "\tvfmadd231ps\t%ymm2, %ymm1, %ymm12",  # outside the marks: not counted
        ]
    )
    mix = isa.main_loops(asm, "test")[2]
    assert (mix.multiply_adds, mix.vector_width, mix.broadcasts) == (2, "ymm", 2)
    assert (mix.loads, mix.stores, mix.stack_accesses, mix.gpr_vector_moves) == (4, 1, 1, 1)
    assert mix.instructions == 10


def test_the_command_prints_every_level(capsys):
    isa.main(["--level", "x86-64-v3"])
    out = capsys.readouterr().out
    assert "| x86-64-v3 | AVX2 + FMA |" in out and "multiply-adds" in out
