"""The CPU kernels on every x86 level: each level this host runs is built and checked against the
float64 oracle; AVX-512, where the host lacks it, is checked from its assembly."""

import os

import pytest
import torch

import im2win
from harness import mca
from im2win import cpu
from im2win.cpu import CompilerError, isa, levels
from im2win.plan import filter_work_floats, streams_output
from im2win.reference import max_violation

pytestmark = pytest.mark.skipif(not levels.x86_host(), reason="x86 levels: not an x86-64 host")

# The implementations whose kernels are in im2win_cpu.cpp.
NATIVE = ["im2win", "im2win_nhwc", "im2win_nchw", "direct", "direct_nhwc"]
# Odd shapes: K not a multiple of any channel block, pixel counts not a multiple of any tile,
# strides and padding per axis, few and many channels, an empty batch, and an output written with
# streaming stores (a one-panel reduction into an output larger than the L2 caches).
SHAPES = [
    ((2, 3, 13, 11), (19, 3, 5, 3), (2, 1), (1, 2)),
    ((1, 3, 180, 180), (64, 3, 3, 3), (1, 1), (1, 1)),
    ((1, 17, 9, 10), (37, 17, 3, 3), (1, 1), (1, 1)),
    ((3, 40, 7, 7), (70, 40, 3, 3), (1, 2), (0, 1)),
    ((0, 5, 8, 8), (4, 5, 3, 3), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("level", list(levels.LEVELS))
def test_every_level_this_host_runs_matches_the_oracle(level):
    if not levels.runs_here(level):
        pytest.skip(f"this CPU does not run {level} ({levels.LEVELS[level].simd})")
    torch.manual_seed(0)
    own = cpu.lib()
    # by the L2 rule on any vendor, so that some shape's output is streamed on Intel hosts too
    with cpu.kernels_from(cpu.SOURCE, level, ("IM2WIN_STREAM_L2=1",)) as handle:
        assert handle.im2win_simd_width() == levels.LEVELS[level].lanes
        streamed = [
            streams_output(
                im2win.ConvShape.of(torch.empty(xs), torch.empty(ws), st, pd),
                torch.get_num_threads(),
            )
            for xs, ws, st, pd in SHAPES
        ]
        assert any(streamed) and not all(streamed)
        for x_shape, w_shape, stride, padding in SHAPES:
            x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
            for impl in NATIVE:
                out = im2win.conv2d(x, w, b, stride, padding, impl=impl)
                assert max_violation(out, x, w, b, stride, padding) <= 1.0, (level, impl, x_shape)
    assert cpu.lib() is own


@pytest.mark.parametrize("loop", list(isa.LOOPS))
@pytest.mark.parametrize("level", list(levels.LEVELS))
def test_the_main_loop_of_every_level_keeps_its_tile_in_registers(level, loop):
    """From the compiler's assembly: each reduction step of each main loop (one a pass, or two on
    Intel CPUs) does M x NR multiply-adds (NR = 2 vectors of output channels) on the level's widest
    registers, loads one B row and M pixel values and stores nothing (the prefetching loop also
    prefetches the B rows' lines), and the loop never touches the stack (spills) or parks a pointer
    in a vector register."""
    if loop not in isa.loops_of(level):
        pytest.skip(f"{level} has no {loop} loop ({levels.LEVELS[level].simd}: one step a pass)")
    try:
        mix = isa.ukernel_loop(level, loop=loop)
    except CompilerError as err:
        pytest.skip(f"the compiler does not build -march={level}: {str(err).splitlines()[-1]}")
    lanes, steps = levels.LEVELS[level].lanes, isa.LOOPS[loop][0]
    assert (mix.rows, mix.loop, mix.steps) == (12 if lanes == 16 else 6, loop, steps)
    assert mix.multiply_adds == 2 * mix.rows * steps
    assert mix.vector_width == {4: "xmm", 8: "ymm", 16: "zmm"}[lanes]
    assert mix.stores == 0
    assert mix.loads >= (2 + mix.rows) * steps
    b_row_lines = max(1, 2 * lanes * 4 // 64)  # NR = 2 vectors of 4-byte floats
    assert mix.prefetches == (steps * b_row_lines if loop == "prefetch" else 0)
    # AVX-512's 12 row pointers, the panel pointer and the step fill 14 general registers: the
    # loop counts its step up to zero so that no bound needs one more (with a bound, GCC 12 kept a
    # row pointer in a vector register and reloaded the bound from the stack at every step).
    assert mix.stack_accesses == 0 and mix.gpr_vector_moves == 0


def test_the_two_panel_main_loop_keeps_its_tile_in_registers():
    """ukernel_wide's main loop (AVX-512): two steps a pass, each 6 pixels by 4 vectors of output
    channels, 24 multiply-adds on zmm registers from 4 B vectors and 6 broadcast pixel values; it
    stores nothing and never touches the stack."""
    try:
        mix = isa.ukernel_loop("x86-64-v4", loop="wide")
    except CompilerError as err:
        pytest.skip(f"the compiler does not build -march=x86-64-v4: {str(err).splitlines()[-1]}")
    assert (mix.rows, mix.steps, mix.vector_width) == (6, 2, "zmm")
    assert mix.multiply_adds == 2 * 6 * 4
    assert mix.loads == 2 * (4 + 6) and mix.broadcasts == 2 * 6
    assert mix.stores == mix.stack_accesses == mix.gpr_vector_moves == 0


@pytest.mark.parametrize("level", ["x86-64-v3", "x86-64-v4"])
def test_the_micro_kernel_taken_apart_keeps_its_multiply_adds(level):
    """The loops im2win_ukernel_part_gflops times are the micro-kernel's own, less one kind of
    instruction each: the same multiply-adds on the same registers, no spills; the first loads
    nothing (had GCC computed a product once for every step or row, it would count fewer
    multiply-adds), the second only the micro-kernel's B rows, neither broadcasts."""
    try:
        kernel, parts = isa.ukernel_loop(level, loop="pairs"), isa.part_loops(level)
    except CompilerError as err:
        pytest.skip(f"the compiler does not build -march={level}: {str(err).splitlines()[-1]}")
    for mix in parts.values():
        assert (mix.rows, mix.multiply_adds) == (kernel.rows, kernel.multiply_adds)
        assert mix.vector_width == kernel.vector_width
        assert mix.broadcasts == mix.stores == mix.stack_accesses == 0
    assert parts["fmas"].loads == 0
    assert parts["bloads"].loads == kernel.loads - kernel.broadcasts == 2 * kernel.steps


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


@pytest.mark.parametrize("block", ["4x3", "3x1"])
def test_other_register_blocks_match_the_oracle(block):
    """The kernels built with another register block (-DIM2WIN_MR/-DIM2WIN_NR, what kernel_ab
    --blocks and isa --block build) compute the same convolution."""
    torch.manual_seed(0)
    with cpu.kernels_from(cpu.SOURCE, "native", cpu.block_defines(block)) as handle:
        assert handle is not cpu._load(cpu.SOURCE.resolve(), "native", ())
        _im2win_matches_the_oracle(SHAPES, block)
    mix = isa.ukernel_loop("x86-64-v3", block=block)
    mr, nr = map(int, block.split("x"))
    assert (mix.rows, mix.multiply_adds) == (mr, mr * nr)


@pytest.mark.parametrize("intel", [0, 1])
def test_either_vendors_tuning_matches_the_oracle(intel):
    """im2win_cpu.cpp picks its main loops (two reduction steps a pass, prefetching B where the
    window rows are wide, or one) and how it writes the packed filter (plain or non-temporal
    stores) by the CPU's vendor; built for either
    (-DIM2WIN_INTEL), both paths run on any host and compute the same convolution."""
    torch.manual_seed(0)
    # tiles whose window rows span more than 2/3 of a 64 KB L1 (AVX-512's 12 rows: 11 * 3 * 321
    # + 2889 floats, 54 KB), where Intel's loop prefetches; an odd reduction (9 * 321 steps)
    wide = ((1, 321, 9, 9), (40, 321, 3, 3), (1, 1), (1, 1))
    with cpu.kernels_from(cpu.SOURCE, "native", (f"IM2WIN_INTEL={intel}",)):
        _im2win_matches_the_oracle([*SHAPES, wide], intel)


def _im2win_matches_the_oracle(shapes, variant):
    """Both im2win paths and direct_nhwc (the same micro-kernels over the input's rows) of the
    loaded kernels against the float64 oracle on `shapes`."""
    for x_shape, w_shape, stride, padding in shapes:
        x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
        for impl in ("im2win", "im2win_nhwc", "direct_nhwc"):
            out = im2win.conv2d(x, w, b, stride, padding, impl=impl)
            assert max_violation(out, x, w, b, stride, padding) <= 1.0, (variant, impl, x_shape)


def test_the_plans_are_cached_per_kernel_library():
    """The plan's queries are cached (cpu.per_kernels), but for each library apart: kernels built
    with another register block get their own workspace sizes, not the cached ones of the package's
    kernels, and those come back after the block."""
    shape = im2win.ConvShape(n=1, c=8, h=12, w=12, k=40, r=3, s=3)  # K > M / 4: a panel a thread

    def asked(handle):
        m = shape.n * shape.p * shape.q
        return handle.im2win_filter_work_floats(shape.k, shape.c, shape.r, shape.s, m, shape.c, 2)

    own = filter_work_floats(shape, 2)
    assert own == asked(cpu.lib())
    with cpu.kernels_from(cpu.SOURCE, "native", cpu.block_defines("3x1")) as handle:
        assert filter_work_floats(shape, 2) == asked(handle) != own
    assert filter_work_floats(shape, 2) == own


@pytest.mark.parametrize("bad", ["6", "0x2", "6x0", "axb", "40x1"])
def test_a_malformed_block_is_refused_with_the_form_it_takes(bad):
    with pytest.raises(ValueError, match="MRxNR"):
        cpu.block_defines(bad)


needs_mca = pytest.mark.skipif(mca.find() is None, reason=str(mca.missing_reason()))


@needs_mca
def test_the_model_finds_the_fma_peak_and_a_latency_bound_chain():
    """llvm-mca's Zen 3 model: 12 independent ymm FMA chains issue 2 a cycle (its two FMA pipes);
    one chain waits on the FMA's 4-cycle latency."""
    peak = mca.simulate(mca.fma_loop("ymm", 12), "znver3")
    assert 12 / peak.cycles == pytest.approx(2.0, rel=0.02)
    assert peak.bound.startswith("Zn3FP")
    chain = mca.simulate(mca.fma_loop("ymm", 1), "znver3")
    assert chain.cycles == pytest.approx(4.0, rel=0.05) and chain.bound == "latency"


@needs_mca
def test_the_avx2_loop_issues_at_the_models_fma_peak_and_a_starved_one_does_not():
    """The source's AVX2 block keeps both FMA pipes busy in the Zen 3 and Skylake models; a 1 x 1
    block (one accumulator: every FMA waits for the last) is far below, so the check can fail."""
    ours = isa.model(["x86-64-v3"])["entries"]
    assert {e["cpu"] for e in ours} >= {"znver3", "skylake"}
    assert all(e["fraction_of_model_peak"] > 0.95 for e in ours if e["source_block"])
    starved = [e for e in isa.model(["x86-64-v3"], ["1x1"])["entries"] if e["block"] == "1x1"]
    assert starved and all(e["fraction_of_model_peak"] < 0.3 for e in starved)
    assert all(e["bound"] == "latency" for e in starved)


@needs_mca
def test_the_avx512_loop_is_modelled_on_zen_and_xeon():
    entries = isa.model(["x86-64-v4"])["entries"]
    assert not [e for e in entries if "error" in e]
    source = {e["cpu"]: e for e in entries if e["source_block"]}
    assert set(source) >= {"znver4", "skylake-avx512", "sapphirerapids"}
    assert all(e["block"] == "12x2" and e["multiply_adds"] == 24 for e in source.values())


@needs_mca
def test_an_unknown_cpu_is_a_clear_error():
    with pytest.raises(mca.MCAError, match="no model of the CPU 'pentium-9'"):
        mca.simulate(mca.fma_loop("ymm", 2), "pentium-9")


def test_without_llvm_mca_the_model_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("LLVM_MCA", "/nonexistent/llvm-mca")
    mca.find.cache_clear()
    try:
        assert isa.model() == {"skipped": mca.missing_reason()}
        assert "apt-get install llvm-19" in mca.missing_reason()
    finally:
        monkeypatch.undo()
        mca.find.cache_clear()


@needs_mca
def test_the_command_models_a_block_it_is_given(capsys):
    isa.main(["--level", "x86-64-v3", "--block", "4x3"])
    out = capsys.readouterr().out
    assert "| x86-64-v3 | 4x3 | znver3" in out and "of that peak" in out


def test_a_level_this_cpu_lacks_names_the_ones_it_runs(monkeypatch):
    monkeypatch.setattr(levels, "_cpu_flags", lambda: frozenset(levels.LEVELS["x86-64"].flags))
    with pytest.raises(
        ValueError, match=r"does not run x86-64-v3 \(AVX2 \+ FMA\); it runs x86-64$"
    ):
        levels.check_runs_here("x86-64-v3")
    with pytest.raises(ValueError, match="unknown x86 level 'avx9'"):
        levels.check_runs_here("avx9")


def test_torch_cannot_be_held_below_sse41():
    with pytest.raises(ValueError, match="oneDNN has no code below SSE4.1; choose x86-64-v2"):
        levels.hold_torch("x86-64")


def test_torch_held_after_its_first_convolution_is_refused_and_left_as_it_was(
    monkeypatch, narrower_level
):
    """oneDNN and ATen read their variables once: a process that has run a convolution is not
    held, and says so (naming the variables to set instead); nothing of the attempt stays."""
    level = narrower_level
    for key in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(key, raising=False)
    torch.nn.functional.conv2d(torch.ones(2, 16, 10, 10), torch.ones(16, 16, 3, 3))
    if torch.backends.cpu.get_cpu_capability().lower() == levels.LEVELS[level].aten:
        pytest.skip(f"this process's PyTorch already runs {level}'s code")
    wanted = levels.LEVELS[level].onednn.upper()
    with pytest.raises(ValueError, match=f"run the command in a fresh process.*={wanted}"):
        levels.hold_torch(level)
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
