"""The CPU kernels on each x86 level: which levels this host runs, and the micro-kernel's main loop
as the compiler makes it for each, read from its assembly.

A host runs its own level and every narrower one, so the SSE and AVX2 code paths are run and checked
here like the native one. AVX-512 (x86-64-v4) can only be read on a host without it: its main loop's
instruction mix (multiply-adds, loads, broadcasts, spills) says whether the register block fits, the
static check that stands in until such a machine times it.

    python -m im2win.cpu.isa            # the main loop on every level, as a table
"""

from __future__ import annotations

import argparse
import functools
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.native import CompilerError, assembly, compiler_version
from im2win.cpu import SOURCE


@dataclass(frozen=True)
class Level:
    name: str  # the x86-64 microarchitecture level, as -march takes it
    simd: str
    lanes: int  # FP32 lanes of the kernel's vectors on this level
    flags: tuple[str, ...]  # /proc/cpuinfo flags it needs beyond the level below


LEVELS = {
    level.name: level
    for level in (
        Level("x86-64", "SSE2", 4, ("sse2",)),
        Level("x86-64-v2", "SSE4.2", 4, ("ssse3", "sse4_1", "sse4_2", "popcnt")),
        Level("x86-64-v3", "AVX2 + FMA", 8, ("avx", "avx2", "fma", "bmi2", "movbe")),
        Level(
            "x86-64-v4", "AVX-512", 16, ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
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


@dataclass(frozen=True)
class LoopMix:
    """Instructions of one pass of the micro-kernel's main loop (one step of the reduction, or more
    where the compiler unrolled it) for a tile of `rows` pixels."""

    level: str
    rows: int
    instructions: int
    # vector FMAs, or multiplies where the level has no FMA (each then has an add)
    multiply_adds: int
    vector_width: str  # the widest vector register the multiply-adds use: xmm, ymm or zmm
    loads: int  # instructions that read memory
    broadcasts: int  # of which broadcasts of one float (the tile's pixel values)
    stores: int
    stack_accesses: int  # reads or writes of the stack: spills (must be 0)
    gpr_vector_moves: int  # moves between general and vector registers: row pointers parked

    def as_dict(self) -> dict:
        return asdict(self)


_INSTRUCTION = re.compile(r"^\s+([a-z][a-z0-9]*)\s*(.*)$")
_LABEL = re.compile(r"^(\.?[A-Za-z_][\w.$]*):")
_JUMP = re.compile(r"^j[a-z]+$")
_MARK = re.compile(r"im2win-ukernel-loop-(begin|end) M=(\d+)")
_MULTIPLY_ADD = re.compile(r"^v?f[n]?m(add|sub)[0-9]*ps$")


def _operands(text: str) -> list[str]:
    """AT&T operands, split at the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text.split("#", 1)[0]:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _mix(level: str, rows: int, body: list[tuple[str, list[str]]]) -> LoopMix:
    fma = [ops for op, ops in body if _MULTIPLY_ADD.match(op)]
    mul = [ops for op, ops in body if op in ("mulps", "vmulps")]
    products = fma or mul
    widths = [
        w for w in ("zmm", "ymm", "xmm") if any(f"%{w}" in o for ops in products for o in ops)
    ]
    memory = [(op, ops) for op, ops in body if any("(" in o for o in ops)]
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
        instructions=len(body),
        multiply_adds=len(products),
        vector_width=widths[0] if widths else "none",
        loads=len(memory) - len(stores),
        broadcasts=sum(op.startswith("vbroadcast") or "{1to" in " ".join(ops) for op, ops in body),
        stores=len(stores),
        stack_accesses=sum(any("(%rsp" in o or "(%rbp" in o for o in ops) for _, ops in body),
        gpr_vector_moves=len(moves),
    )


def main_loops(asm: str, level: str = "native") -> dict[int, LoopMix]:
    """Per tile height M: the micro-kernel's main loop in `asm` (the loop between its marks with the
    most multiply-adds, over every copy the compiler made of ukernel<M>)."""
    best: dict[int, LoopMix] = {}
    region: list[str] | None = None
    rows = 0
    for line in asm.splitlines():
        mark = _MARK.search(line)
        if mark and mark.group(1) == "begin":
            region, rows = [], int(mark.group(2))
            continue
        if mark and region is not None:
            for mix in _loops(region, level, rows):
                if rows not in best or mix.multiply_adds > best[rows].multiply_adds:
                    best[rows] = mix
            region = None
        elif region is not None:
            region.append(line)
    return best


def _loops(lines: list[str], level: str, rows: int) -> list[LoopMix]:
    """The loops in one marked region: from a label to a jump back to it."""
    labels: dict[str, int] = {}
    body: list[tuple[str, list[str]]] = []
    loops = []
    for line in lines:
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = len(body)
            continue
        ins = _INSTRUCTION.match(line)
        if not ins or ins.group(1).startswith("."):
            continue
        op, ops = ins.group(1), _operands(ins.group(2))
        body.append((op, ops))
        if _JUMP.match(op) and ops and ops[0] in labels:
            loops.append(_mix(level, rows, body[labels[ops[0]] :]))
    return loops


@functools.cache
def ukernel_loop(level: str, source: Path = SOURCE) -> LoopMix:
    """The main loop of the full-height micro-kernel (the largest M) built for -march=`level`."""
    loops = main_loops(assembly(source, level), level)
    if not loops:
        raise RuntimeError(
            f"no marked micro-kernel loop in the assembly of {source.name} ({level})"
        )
    return loops[max(loops)]


def report(levels: list[str] | None = None) -> dict:
    """The main loop of every level in `levels` (default: all; LoopMix.as_dict, with the level's
    SIMD and whether this CPU runs it), for a run record; a level the compiler cannot build says
    why instead."""
    if not x86_host():
        return {"skipped": f"x86 levels only: this host is {platform.machine()}"}
    entries = []
    for name in levels or list(LEVELS):
        entry = {"level": name, "simd": LEVELS[name].simd, "runs_here": runs_here(name)}
        try:
            entry |= ukernel_loop(name).as_dict()
        except (CompilerError, RuntimeError) as err:
            entry["error"] = str(err).splitlines()[0]
        entries.append(entry)
    return {
        "compiler": compiler_version(),
        "method": "the compiler's assembly of im2win_cpu.cpp (-O3 -march=LEVEL): the loop with "
        "the most multiply-adds between the micro-kernel's marks, for the largest tile height M",
        "levels": entries,
    }


def table(code: dict) -> str:
    """report()'s levels as a Markdown table (one row a level; a level not built says why)."""
    head = (
        "| level | SIMD | runs here | tile (pixels x vectors) | multiply-adds | loads | "
        "of them broadcasts | stores | stack accesses | GPR-vector moves | instructions |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for lv in code["levels"]:
        start = f"| {lv['level']} | {lv['simd']} | {'yes' if lv['runs_here'] else 'no'} |"
        if "error" in lv:
            rows.append(f"{start} not built: {lv['error']} |" + " |" * 7)
            continue
        rows.append(
            f"{start} {lv['rows']} x {lv['multiply_adds'] // max(lv['rows'], 1)} "
            f"{lv['vector_width']} | {lv['multiply_adds']} | {lv['loads']} | {lv['broadcasts']} | "
            f"{lv['stores']} | {lv['stack_accesses']} | {lv['gpr_vector_moves']} | "
            f"{lv['instructions']} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m im2win.cpu.isa",
        description="The im2win micro-kernel's main loop on each x86 level, from the compiler's "
        "assembly (-O3 -march=LEVEL), and whether this CPU runs that level.",
    )
    parser.add_argument(
        "--level",
        action="append",
        choices=list(LEVELS),
        help="x86-64 level (repeatable; default: all of them)",
    )
    code = report(parser.parse_args(argv).level)
    if "skipped" in code:
        raise SystemExit(f"im2win.cpu.isa: {code['skipped']}")
    print(f"From {code['method']}; compiler: {code['compiler']}.\n\n{table(code)}", end="")


if __name__ == "__main__":
    main()
