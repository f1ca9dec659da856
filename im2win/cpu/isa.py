"""The CPU kernels on each x86 level: which levels this host runs, and the micro-kernel's main loop
as the compiler makes it for each, read from its assembly.

A host runs its own level and every narrower one, so the SSE and AVX2 code paths are run and checked
here like the native one. AVX-512 (x86-64-v4) can only be read on a host without it: its main loop's
instruction mix (multiply-adds, loads, broadcasts, spills) says whether the register block fits, and
llvm-mca's models of AVX-512 CPUs (harness.mca) how fast it would issue there: the static checks that
stand in until such a machine times it.

    python -m im2win.cpu.isa            # the main loop on every level, as a table
    python -m im2win.cpu.isa --model    # and its throughput in llvm-mca's models of Zen and Xeon

The levels themselves, and which this host runs: im2win.cpu.levels; the AArch64 build, read the
same way (its Syntax): im2win.cpu.aarch64.
"""

from __future__ import annotations

import argparse
import functools
import platform
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import mca
from harness.native import CompilerError, assembly, compiler_version
from im2win.cpu import SOURCE, block_argument, block_defines
from im2win.cpu.levels import LEVELS, runs_here, x86_host


@dataclass(frozen=True)
class LoopMix:
    """Instructions of one pass of one of the micro-kernel's main loops (LOOPS) for a tile of
    `rows` pixels."""

    level: str
    rows: int
    loop: str  # which of LOOPS
    steps: int  # reduction steps a pass
    instructions: int
    # vector FMAs, or multiplies where the level has no FMA (each then has an add)
    multiply_adds: int
    vector_width: str  # the widest vector register the multiply-adds use: xmm, ymm or zmm
    loads: int  # instructions that read memory
    broadcasts: int  # of which broadcasts of one float (the tile's pixel values)
    stores: int
    prefetches: int  # software prefetches (not counted in loads)
    stack_accesses: int  # reads or writes of the stack: spills (must be 0)
    gpr_vector_moves: int  # moves between general and vector registers: row pointers parked
    code: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the loop's assembly

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "code"}


_INSTRUCTION = re.compile(r"^\s+([a-z][a-z0-9]*)\s*(.*)$")
_LABEL = re.compile(r"^(\.?[A-Za-z_][\w.$]*):")
_JUMP = re.compile(r"^j[a-z]+$")
_MARK = re.compile(r"im2win-ukernel-([a-z]+)-(begin|end) M=(\d+)")
# The main loops im2win_cpu.cpp marks, by the name in their marks: reduction steps a pass, where
# each runs (kIntel in the source: on Intel, whose FMA ports also issue the loop's integer ops, two
# steps a pass, and the B rows prefetched where a tile's window rows fill most of L1), and the
# fewest SIMD lanes of a level that has it (SSE's 16 registers would spill in two steps a pass).
LOOPS = {
    "loop": (1, "AMD and other CPUs", 4),
    "pairs": (2, "Intel", 8),
    "prefetch": (2, "Intel, tiles whose window rows span over 2/3 of L1; B rows prefetched", 8),
}


# The micro-kernel's main loop taken apart (ukernel_part, timed by im2win_ukernel_part_gflops),
# marked in its copy of two steps a pass (Intel's): its multiply-adds alone ("fmas") and with its
# B loads ("bloads"), for the tests to hold to the micro-kernel's own multiply-adds and loads.
PART_LOOPS = {"fmas": (2, "the multiply-adds alone", 8), "bloads": (2, "with the B loads", 8)}


# The main loop of the micro-kernel over two panels a tile (ukernel_wide: AVX-512, where a work
# item takes several channel blocks, item_blocks), M <= 6 pixels by 4 vectors.
WIDE_LOOPS = {"wide": (2, "any CPU with AVX-512, tiles through two panels at once", 16)}
MAIN_LOOPS = LOOPS | WIDE_LOOPS  # every main loop the micro-kernels run


def loops_of(level: str) -> list[str]:
    """The main loops (MAIN_LOOPS) the source has on x86 level `level`."""
    return [name for name, (_, _, lanes) in MAIN_LOOPS.items() if LEVELS[level].lanes >= lanes]


_MULTIPLY_ADD = re.compile(r"^v?f[n]?m(add|sub)[0-9]*ps$")


def _operands(text: str, comment: str = "#", brackets: str = "()") -> list[str]:
    """Operands, split at the commas outside brackets (AT&T's parentheses by default; AArch64's
    "[]{}"), the comment after `comment` dropped."""
    out, depth, cur = [], 0, ""
    for ch in text.split(comment, 1)[0]:
        depth += (ch in brackets[::2]) - (ch in brackets[1::2])
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _mix(
    level: str, rows: int, loop: str, body: list[tuple[str, list[str]]], code: list[str]
) -> LoopMix:
    fma = [ops for op, ops in body if _MULTIPLY_ADD.match(op)]
    mul = [ops for op, ops in body if op in ("mulps", "vmulps")]
    products = fma or mul
    widths = [
        w for w in ("zmm", "ymm", "xmm") if any(f"%{w}" in o for ops in products for o in ops)
    ]
    prefetches = [op for op, _ in body if op.startswith("prefetch")]
    memory = [
        (op, ops)
        for op, ops in body
        if any("(" in o for o in ops) and not op.startswith("prefetch")
    ]
    stores = [ops for op, ops in memory if "(" in ops[-1] and op.startswith(("mov", "vmov"))]
    moves = [
        ops
        for op, ops in body
        if op in ("movq", "vmovq", "movd", "vmovd")
        and len(ops) == 2
        and any(o.startswith("%xmm") for o in ops)
        and any(re.match(r"%[re]?[a-z0-9]+$", o) and "mm" not in o for o in ops)
    ]
    return LoopMix(
        level=level,
        rows=rows,
        loop=loop,
        steps=(MAIN_LOOPS | PART_LOOPS)[loop][0],
        instructions=len(body),
        multiply_adds=len(products),
        vector_width=widths[0] if widths else "none",
        loads=len(memory) - len(stores),
        broadcasts=sum(op.startswith("vbroadcast") or "{1to" in " ".join(ops) for op, ops in body),
        stores=len(stores),
        prefetches=len(prefetches),
        stack_accesses=sum(any("(%rsp" in o or "(%rbp" in o for o in ops) for _, ops in body),
        gpr_vector_moves=len(moves),
        code=tuple(code),
    )


@dataclass(frozen=True)
class Syntax:
    """How an assembly's loops read: its instructions, jumps, comments and operand brackets, and
    the instruction mix of a loop body (level, rows, loop, body, code) -> LoopMix."""

    instruction: re.Pattern
    jump: re.Pattern
    comment: str
    brackets: str
    mix: Callable[..., LoopMix]


X86_SYNTAX = Syntax(_INSTRUCTION, _JUMP, "#", "()", _mix)  # AT&T, as GCC writes x86-64


def main_loops(
    asm: str, level: str = "native", loop: str = "loop", syntax: Syntax = X86_SYNTAX
) -> dict[int, LoopMix]:
    """Per tile height M: the micro-kernel's main loop `loop` (one of LOOPS) in `asm`, the loop
    between its marks with the most multiply-adds. Of the copies the compiler made of
    ukernel<M> (one a caller it is inlined into), the one with the most stack accesses and
    GPR-vector moves: every copy runs, so the worst one is the one to read."""
    best: dict[int, LoopMix] = {}
    region: list[str] | None = None
    rows = 0
    for line in asm.splitlines():
        mark = _MARK.search(line)
        if mark and mark.group(1) != loop:
            continue
        if mark and mark.group(2) == "begin":
            region, rows = [], int(mark.group(3))
            continue
        if mark and region is not None:
            for mix in _loops(region, level, rows, loop, syntax):
                if rows not in best or _rank(mix) > _rank(best[rows]):
                    best[rows] = mix
            region = None
        elif region is not None:
            region.append(line)
    return best


def _rank(mix: LoopMix) -> tuple[int, int]:
    return mix.multiply_adds, mix.stack_accesses + mix.gpr_vector_moves


def _loops(lines: list[str], level: str, rows: int, loop: str, syntax: Syntax) -> list[LoopMix]:
    """The loops in one marked region: from a label to a jump back to it."""
    labels: dict[str, int] = {}
    body: list[tuple[str, list[str]]] = []
    code: list[str] = []
    loops = []
    for line in lines:
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = len(body)
            continue
        ins = syntax.instruction.match(line)
        if not ins or ins.group(1).startswith("."):
            continue
        op, ops = ins.group(1), _operands(ins.group(2), syntax.comment, syntax.brackets)
        body.append((op, ops))
        code.append(line.split(syntax.comment, 1)[0].rstrip())
        target = ops[-1] if ops else ""  # AT&T's jumps and AArch64's branches: the label last
        if syntax.jump.match(op) and target in labels:
            start = labels[target]
            looped = [".Lloop:", *code[start:-1], code[-1].replace(target, ".Lloop")]
            loops.append(syntax.mix(level, rows, loop, body[start:], looped))
    return loops


def model_entry(
    loop: LoopMix, block: str, source_block: bool, t: mca.Throughput, peak: float, host: bool
) -> dict:
    """One modelled loop on one CPU: its throughput and its multiply-adds a cycle against the
    model's FMA peak (`peak` a cycle)."""
    return {
        "level": loop.level,
        "block": block,
        "source_block": source_block,
        "multiply_adds": loop.multiply_adds,
        "stack_accesses": loop.stack_accesses,
        **t.as_dict(),
        "host": host,
        "multiply_adds_per_cycle": loop.multiply_adds / t.cycles,
        "model_peak_per_cycle": peak,
        "fraction_of_model_peak": loop.multiply_adds / t.cycles / peak,
    }


@functools.cache
def ukernel_loop(
    level: str, source: Path = SOURCE, block: str | None = None, loop: str = "loop"
) -> LoopMix:
    """The main loop of the full-height micro-kernel (the largest M) built for -march=`level`, with
    the source's register block or `block` ("MRxNR"): `loop`, one of LOOPS."""
    defines = block_defines(block) if block else ()
    loops = main_loops(assembly(source, level, defines), level, loop)
    if not loops:
        raise RuntimeError(
            f"no marked micro-kernel loop in the assembly of {source.name} ({level})"
        )
    return loops[max(loops)]


def part_loops(level: str, source: Path = SOURCE) -> dict[str, LoopMix]:
    """The micro-kernel's main loop taken apart (PART_LOOPS), built for -march=`level`: each part's
    loop with the most multiply-adds between its marks."""
    asm = assembly(source, level, ())
    return {name: max(main_loops(asm, level, name).values(), key=_rank) for name in PART_LOOPS}


def report(levels: list[str] | None = None) -> dict:
    """The main loop of every level in `levels` (default: all; LoopMix.as_dict, with the level's
    SIMD and whether this CPU runs it), for a run record; a level the compiler cannot build says
    why instead."""
    if not x86_host():
        return {"skipped": f"x86 levels only: this host is {platform.machine()}"}
    entries = []
    for name in levels or list(LEVELS):
        for loop in loops_of(name):
            entry = {"level": name, "simd": LEVELS[name].simd, "runs_here": runs_here(name)}
            try:
                entry |= ukernel_loop(name, loop=loop).as_dict()
            except (CompilerError, RuntimeError) as err:
                entry |= {"loop": loop, "error": str(err).splitlines()[0]}
            entries.append(entry)
    return {
        "compiler": compiler_version(),
        "method": "the compiler's assembly of im2win_cpu.cpp (-O3 -march=LEVEL): the loop with "
        "the most multiply-adds between the micro-kernel's marks, for the largest tile height M "
        "(of the copies the compiler made, one a caller, the one with the most stack accesses "
        "and GPR-vector moves); of each of its main loops: "
        + "; ".join(
            f"{name}: {steps} reduction step{'s' if steps > 1 else ''} a pass, run on {where}"
            for name, (steps, where, _) in MAIN_LOOPS.items()
        ),
        "levels": entries,
    }


def table(code: dict) -> str:
    """report()'s levels as a Markdown table (one row a level; a level not built says why)."""
    head = (
        "| level | SIMD | runs here | loop (steps a pass) | tile (pixels x vectors) | "
        "multiply-adds | loads | of them broadcasts | stores | prefetches | stack accesses | "
        "GPR-vector moves | instructions |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for lv in code["levels"]:
        loop = lv.get("loop", "loop")  # runs before 2026-12-03 read the one-step loop only
        steps = MAIN_LOOPS[loop][0]
        start = (
            f"| {lv['level']} | {lv['simd']} | {'yes' if lv['runs_here'] else 'no'} | "
            f"{loop} ({steps}) |"
        )
        if "error" in lv:
            rows.append(f"{start} not built: {lv['error']} |" + " |" * 8)
            continue
        rows.append(
            f"{start} {lv['rows']} x {lv['multiply_adds'] // max(lv['rows'] * steps, 1)} "
            f"{lv['vector_width']} | {lv['multiply_adds']} | {lv['loads']} | {lv['broadcasts']} | "
            f"{lv['stores']} | {lv.get('prefetches', 0)} | {lv['stack_accesses']} | "
            f"{lv['gpr_vector_moves']} | {lv['instructions']} |"
        )
    return head + "\n".join(rows) + "\n"


# CPUs whose LLVM model each level's loop is simulated on (besides this host's, on a level it runs):
# the Zen and Xeon generations that have the level's widest vectors.
MODEL_CPUS = {
    "x86-64-v3": ("znver3", "skylake"),
    "x86-64-v4": ("znver4", "znver5", "skylake-avx512", "icelake-server", "sapphirerapids"),
}
# Register blocks modelled besides the source's own (see the note beside MR in im2win_cpu.cpp).
CANDIDATE_BLOCKS = {"x86-64-v4": ("6x4", "8x3")}
# Independent FMAs of the peak loop, as the registers allow (4s: AArch64's NEON, 4 pipes x 4 cycles)
PEAK_CHAINS = {"xmm": 12, "ymm": 12, "zmm": 24, "4s": 16}


@functools.cache
def model_peak(cpu: str, width: str) -> float:
    """FMAs a cycle of PEAK_CHAINS[width] independent FMA chains in LLVM's model of `cpu`."""
    chains, triple = PEAK_CHAINS[width], mca.AARCH64 if width == "4s" else mca.X86
    return chains / mca.simulate(mca.fma_loop(width, chains), cpu, triple).cycles


def model(levels: list[str] | None = None, blocks: list[str] | None = None) -> dict:
    """The micro-kernel's main loop of every level in `levels` (default: AVX2 and AVX-512), with
    the source's register block, the level's CANDIDATE_BLOCKS and `blocks`, simulated by llvm-mca
    on MODEL_CPUS (and this host's own CPU where it runs the level): cycles a pass, multiply-adds a
    cycle, their fraction of the same model's FMA peak, and what bounds the loop. A missing
    llvm-mca, or a level or block it cannot read, says why."""
    reason = mca.missing_reason() or (None if x86_host() else f"x86 only: {platform.machine()}")
    if reason:
        return {"skipped": reason}
    entries = []
    for level in levels or list(MODEL_CPUS):
        cpus = (("native",) if runs_here(level) else ()) + MODEL_CPUS.get(level, ())
        for block in dict.fromkeys([None, *CANDIDATE_BLOCKS.get(level, ()), *(blocks or ())]):
            try:
                loop = ukernel_loop(level, block=block)
            except (CompilerError, RuntimeError) as err:
                entries.append({"level": level, "block": block, "error": str(err).splitlines()[0]})
                continue
            label = f"{loop.rows}x{loop.multiply_adds // max(loop.rows, 1)}"
            seen = set()
            for cpu in cpus:
                try:
                    t = mca.simulate(list(loop.code), cpu)
                    peak = model_peak(cpu, loop.vector_width)
                except mca.MCAError as err:
                    entries.append({"level": level, "block": label, "cpu": cpu, "error": str(err)})
                    continue
                if t.cpu in seen:  # this host is one of the named CPUs
                    continue
                seen.add(t.cpu)
                entries.append(
                    model_entry(loop, label, block is None, t, peak, host=cpu == "native")
                )
    return {
        "tool": f"llvm-mca (LLVM {mca.version()})",
        "method": "the micro-kernel's main loop (the assembly read as for the instruction mix) "
        f"repeated {mca.ITERATIONS} times in llvm-mca's model of each CPU; its multiply-adds a "
        "cycle against that model's own FMA peak (independent FMA chains on the same registers). "
        "A model, not a timing: it is as right as LLVM's scheduling model of the CPU.",
        "entries": entries,
    }


def model_table(modelled: dict) -> str:
    """model()'s entries as a Markdown table (an entry that failed says why)."""
    head = (
        "| level | block (pixels x vectors) | CPU model | cycles a pass | multiply-adds a cycle | "
        "model's FMA peak a cycle | of that peak | bound by |\n|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for e in modelled["entries"]:
        block = e["block"] or "source"
        if "error" in e:
            rows.append(f"| {e['level']} | {block} | {e.get('cpu', '')} | {e['error']} |||||")
            continue
        mark = " (the source's)" if e["source_block"] else ""
        host = " (this host)" if e["host"] else ""
        rows.append(
            f"| {e['level']} | {block}{mark} | {e['cpu']}{host} | {e['cycles']:.2f} | "
            f"{e['multiply_adds_per_cycle']:.2f} | {e['model_peak_per_cycle']:.2f} | "
            f"{100 * e['fraction_of_model_peak']:.0f}% | {e['bound']} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m im2win.cpu.isa",
        description="The im2win micro-kernel's main loop on each x86 level, from the compiler's "
        "assembly (-O3 -march=LEVEL), and whether this CPU runs that level; with --model, its "
        "throughput in llvm-mca's models of Zen and Xeon CPUs, for the register block of the "
        "source and others.",
    )
    parser.add_argument(
        "--level",
        action="append",
        choices=list(LEVELS),
        help="x86-64 level (repeatable; default: all of them, and AVX2 and AVX-512 for --model)",
    )
    parser.add_argument(
        "--model",
        action="store_true",
        help="also simulate the loop with llvm-mca (LLVM 19 or newer for Zen 4 and Zen 5)",
    )
    parser.add_argument(
        "--block",
        action="append",
        metavar="MRxNR",
        type=block_argument,
        help="another register block to model, MR pixels by NR vectors (repeatable; e.g. 4x3)",
    )
    args = parser.parse_args(argv)
    code = report(args.level)
    if "skipped" in code:
        raise SystemExit(f"im2win.cpu.isa: {code['skipped']}")
    modelled = model(args.level, args.block) if args.model or args.block else None
    print_report("im2win.cpu.isa", code, modelled)


def print_report(prog: str, code: dict, modelled: dict | None) -> None:
    """A command's output: the main loops' table (report's record), then the model's (model's
    record; None: not asked for)."""
    print(f"From {code['method']}; compiler: {code['compiler']}.\n\n{table(code)}", end="")
    if modelled is None:
        return
    if "skipped" in modelled:
        raise SystemExit(f"{prog}: no model: {modelled['skipped']}")
    print(f"\nFrom {modelled['tool']}: {modelled['method']}\n\n{model_table(modelled)}", end="")


if __name__ == "__main__":
    main()
