"""The machine code NVRTC produced: disassembly of a CUBIN (cuobjdump -sass, no GPU needed) and the
instruction mix of a kernel's main loop.

The main loop is the smallest loop (a backward branch and its target) with the most FFMA
instructions: for im2win_conv, one BK-deep step of the implicit GEMM. Its mix shows what bounds the
kernel before it ever runs: FFMA per shared-load instruction, the width of every load and store
(LDS.128 is one instruction for four floats), local-memory traffic (spills), barriers.

Needs `cuobjdump` and `nvdisasm` (PyPI: nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm, whose wheels
put them in nvidia/cu13/bin; or on PATH).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class DisassemblerUnavailable(RuntimeError):
    """cuobjdump or nvdisasm is not installed."""


def _tool_dirs() -> list[str]:
    try:
        import nvidia

        return [str(Path(p) / "cu13" / "bin") for p in nvidia.__path__]
    except ImportError:
        return []


def _cuobjdump() -> tuple[str, dict]:
    """cuobjdump's path and an environment in which it finds nvdisasm."""
    search = os.pathsep.join([*_tool_dirs(), os.environ.get("PATH", "")])
    tool, helper = shutil.which("cuobjdump", path=search), shutil.which("nvdisasm", path=search)
    if tool is None or helper is None:
        raise DisassemblerUnavailable(
            "cuobjdump and nvdisasm are needed to read the GPU machine code: "
            "pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm"
        )
    return tool, {**os.environ, "PATH": os.pathsep.join([str(Path(helper).parent), search])}


@dataclass(frozen=True)
class Instruction:
    address: int
    predicate: str
    opcode: str  # with its modifiers, e.g. LDS.128, FFMA, BAR.SYNC.DEFER_BLOCKING
    operands: str

    @property
    def branch_target(self) -> int | None:
        if self.opcode.split(".")[0] != "BRA":
            return None
        m = re.search(r"0x([0-9a-f]+)\s*$", self.operands)
        return int(m.group(1), 16) if m else None


_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")


def disassemble(cubin: bytes, kernel: str) -> list[Instruction]:
    """The SASS instructions of `kernel` in a CUBIN."""
    tool, env = _cuobjdump()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernels.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run(
            [tool, "-sass", "-fun", kernel, str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if proc.returncode != 0:
        raise DisassemblerUnavailable(f"cuobjdump failed: {proc.stderr.strip()[:500]}")
    out = []
    for m in _LINE.finditer(proc.stdout):
        address, predicate, opcode, operands = m.groups()
        out.append(
            Instruction(int(address, 16), (predicate or "").strip(), opcode, operands.strip())
        )
    if not out:
        raise DisassemblerUnavailable(f"no SASS for kernel {kernel!r} in the CUBIN")
    return out


def main_loop(code: list[Instruction]) -> list[Instruction]:
    """The smallest loop with the most FFMAs (all of `code` when it has no loop): the innermost one
    that holds them, with any loop inside it (a fused kernel's carry of its place in the
    reduction) counted once."""
    loops = []
    for ins in code:
        target = ins.branch_target
        if target is not None and target <= ins.address:
            loops.append([i for i in code if target <= i.address <= ins.address])
    return max(
        loops or [code], key=lambda body: (sum(i.opcode == "FFMA" for i in body), -len(body))
    )


def _width(opcode: str) -> int:
    """Bits an access moves per thread (LDS.128 -> 128; no size suffix: 32)."""
    for part in opcode.split(".")[1:]:
        if part in ("64", "128"):
            return int(part)
        if part in ("U8", "S8"):
            return 8
        if part in ("U16", "S16"):
            return 16
    return 32


ACCESSES = {
    "LDS": "shared load",
    "STS": "shared store",
    "LDG": "global load",
    "STG": "global store",
    "LDL": "local load",
    "STL": "local store",
    "LDSM": "shared load",
    "LDGSTS": "global to shared copy (cp.async)",
}


def instruction_mix(body: list[Instruction]) -> dict:
    """Counts of a loop body: FFMA, every memory access by kind and width, barriers, the rest, and
    FFMA per shared-load instruction."""
    counts: collections.Counter = collections.Counter()
    widths: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for ins in body:
        base = ins.opcode.split(".")[0]
        if base in ACCESSES:
            widths[base][_width(ins.opcode)] += 1
            counts[base] += 1
        elif base == "BAR":
            counts["BAR"] += 1
        elif base in ("FFMA", "FMUL", "FADD"):
            counts[base] += 1
        else:
            counts["other"] += 1
    shared_loads = counts["LDS"] + counts["LDSM"]
    return {
        "instructions": len(body),
        "ffma": counts["FFMA"],
        "shared_loads": shared_loads,
        "ffma_per_shared_load": counts["FFMA"] / shared_loads if shared_loads else None,
        "widths": {k: dict(sorted(v.items())) for k, v in sorted(widths.items())},
        "local_accesses": counts["LDL"] + counts["STL"],  # spills inside the loop
        "barriers": counts["BAR"],
        "other": counts["other"],
    }


def loop_mix(cubin: bytes, kernel: str = "im2win_conv") -> dict:
    """instruction_mix of `kernel`'s main loop in a CUBIN."""
    return instruction_mix(main_loop(disassemble(cubin, kernel)))
