"""The CPU kernels' AArch64 build (64-bit ARM: NEON, 4 lanes, 32 registers) read without an ARM
machine: the micro-kernel's main loop from a cross compiler's assembly (the host's own compiler on
an AArch64 host), read as im2win.cpu.isa reads the x86 levels', and its throughput in llvm-mca's
models of Neoverse cores. The register block the source takes there was chosen from these.

    python -m im2win.cpu.aarch64            # the main loop of the source's block, as a table
    python -m im2win.cpu.aarch64 --model    # and it and other blocks on Neoverse N1, V1 and V2

The build itself is checked by tests/test_portability.py (under qemu-aarch64).
"""

from __future__ import annotations

import argparse
import functools
import re
import shutil

from harness import mca
from harness.native import CompilerError, aarch64_host, assembly, find_compiler
from im2win.cpu import SOURCE, block_argument, block_defines, isa

# AArch64: GCC's assembly for the baseline every 64-bit ARM server core runs (v8.2: Neoverse N1 on),
# LLVM's models of three generations of Neoverse cores, and register blocks besides the source's.
AARCH64 = "aarch64"
CROSS = "aarch64-linux-gnu-g++"
MARCH = "armv8.2-a"
CPUS = ("neoverse-n1", "neoverse-v1", "neoverse-v2")
BLOCKS = ("6x2", "12x2", "8x3", "6x4")
CHAINS = isa.PEAK_CHAINS["4s"]  # independent FMAs of the peak loop
_INSTRUCTION = re.compile(r"^\s+([a-z][a-z0-9.]*)\s*(.*)$")
_BRANCH = re.compile(r"^(b|b\.?(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)|cbn?z|tbn?z)$")
_GPR = re.compile(r"^[xw]([0-9]+|zr)$")


def compiler() -> str | None:
    """The compiler that builds AArch64 code here: the host's own on an AArch64 host, else the
    cross compiler on PATH, or None."""
    return find_compiler() if aarch64_host() else shutil.which(CROSS)


def _mix(
    level: str, rows: int, loop: str, body: list[tuple[str, list[str]]], code: list[str]
) -> isa.LoopMix:
    """A loop's instruction mix, counted as isa's x86 one is (fmla by element: a multiply-add)."""
    fmla = [ops for op, ops in body if op == "fmla"]
    memory = [(op, ops) for op, ops in body if any(o.startswith("[") for o in ops)]
    stores = [ops for op, ops in memory if op.startswith("st")]
    prefetches = [op for op, _ in body if op == "prfm"]
    moves = [  # between general and vector registers (fmov, dup, ins, umov)
        ops
        for op, ops in body
        if op in ("fmov", "dup", "ins", "umov", "mov")
        and any(_GPR.match(o) for o in ops)
        and any(o[0] in "vsdq" and o[1:2].isdigit() for o in ops)
    ]
    return isa.LoopMix(
        level=level,
        rows=rows,
        loop=loop,
        steps=isa.MAIN_LOOPS[loop][0],
        instructions=len(body),
        multiply_adds=len(fmla),
        vector_width="4s" if any(".4s" in o for ops in fmla for o in ops) else "none",
        loads=len(memory) - len(stores) - len(prefetches),
        broadcasts=sum(op in ("ld1r", "dup") for op, _ in body),
        stores=len(stores),
        prefetches=len(prefetches),
        stack_accesses=sum(any(re.search(r"\[sp\b", o) for o in ops) for _, ops in body),
        gpr_vector_moves=len(moves),
        code=tuple(code),
    )


@functools.cache
def main_loop(block: str | None = None) -> isa.LoopMix:
    """The main loop of the full-height micro-kernel built for AArch64 (-march=MARCH), with
    the source's register block or `block` ("MRxNR")."""
    cxx = compiler()
    if cxx is None:
        raise CompilerError(
            f"no {CROSS} on PATH to build AArch64 code (Debian/Ubuntu: apt-get install "
            "g++-aarch64-linux-gnu)"
        )
    defines = block_defines(block) if block else ()
    loops = isa.main_loops(assembly(SOURCE, MARCH, defines, cxx), AARCH64, syntax=ARM_SYNTAX)
    if not loops:
        raise RuntimeError(f"no marked micro-kernel loop in the AArch64 assembly of {SOURCE.name}")
    return loops[max(loops)]


def report() -> dict:
    """isa.report()'s record for the AArch64 build (its one level, "aarch64")."""
    entry = {"level": AARCH64, "simd": "NEON", "runs_here": aarch64_host()}
    try:
        entry |= main_loop().as_dict()
    except (CompilerError, RuntimeError) as err:
        entry |= {"loop": "loop", "error": str(err).splitlines()[0]}
    return {
        "compiler": compiler() or "none",
        "method": f"the assembly of im2win_cpu.cpp for AArch64 (-O3 -march={MARCH}), read "
        "as for x86",
        "levels": [entry],
    }


def model(blocks: list[str] | None = None) -> dict:
    """isa.model()'s record for the AArch64 build: the source's register block, BLOCKS and
    `blocks`, on LLVM's models of CPUS, against each model's peak of CHAINS
    independent NEON FMAs."""
    reason = mca.missing_reason() or (
        None if compiler() else f"no {CROSS} on PATH to build AArch64 code"
    )
    if reason:
        return {"skipped": reason}
    entries = []
    for block in dict.fromkeys([None, *BLOCKS, *(blocks or ())]):
        try:
            loop = main_loop(block)
        except (CompilerError, RuntimeError) as err:
            entries.append({"level": AARCH64, "block": block, "error": str(err).splitlines()[0]})
            continue
        label = f"{loop.rows}x{loop.multiply_adds // max(loop.rows, 1)}"
        for cpu in CPUS:
            try:
                t = mca.simulate(list(loop.code), cpu, mca.AARCH64)
                peak = isa.model_peak(cpu, "4s")
            except mca.MCAError as err:
                entries.append({"level": AARCH64, "block": label, "cpu": cpu, "error": str(err)})
                continue
            entries.append(isa.model_entry(loop, label, block is None, t, peak, host=False))
    return {
        "tool": f"llvm-mca (LLVM {mca.version()})",
        "method": "the AArch64 build's main loop repeated "
        f"{mca.ITERATIONS} times in llvm-mca's model of each Neoverse core; its multiply-adds a "
        f"cycle against that model's own peak ({CHAINS} independent NEON FMAs). A model, "
        "not a timing.",
        "entries": entries,
    }


ARM_SYNTAX = isa.Syntax(_INSTRUCTION, _BRANCH, "//", "[]{}", _mix)  # GCC's AArch64 assembly


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m im2win.cpu.aarch64",
        description="The im2win micro-kernel's main loop built for AArch64 "
        f"(-O3 -march={MARCH}), from the assembly of a cross compiler ({CROSS}; apt-get install "
        "g++-aarch64-linux-gnu) or of an AArch64 host's own; with --model, its throughput and "
        "that of other register blocks in llvm-mca's models of Neoverse N1, V1 and V2.",
    )
    parser.add_argument("--model", action="store_true", help="also simulate it with llvm-mca")
    parser.add_argument(
        "--block",
        action="append",
        metavar="MRxNR",
        type=block_argument,
        help=f"another register block to model besides {', '.join(BLOCKS)} (repeatable)",
    )
    args = parser.parse_args(argv)
    code = report()
    if "error" in code["levels"][0]:
        raise SystemExit(f"im2win.cpu.aarch64: {code['levels'][0]['error']}")
    modelled = model(args.block) if args.model or args.block else None
    isa.print_report("im2win.cpu.aarch64", code, modelled)


if __name__ == "__main__":
    main()
