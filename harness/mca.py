"""Static throughput of a loop on a named CPU, from LLVM's machine code analyzer (llvm-mca).

llvm-mca simulates a block of assembly, repeated, on LLVM's scheduling model of a CPU: its pipes,
their throughputs and latencies, its dispatch width. It stands in for a timing on CPUs this host is
not (an AVX-512 Zen 4 or Xeon, read from a host without AVX-512), and tells, on any CPU, whether a
loop is bound by its multiply-adds or by another pipe. It is a model: where LLVM's model of a CPU is
wrong, so is the answer (the model of a CPU is named in every record, with LLVM's version).

Environment:
    LLVM_MCA: the llvm-mca binary (default: the newest llvm-mca or llvm-mca-NN on PATH).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

ITERATIONS = 200  # passes of the loop per simulation: enough for the steady state
X86 = "x86_64-unknown-linux-gnu"  # the target triples modelled: x86-64 (AT&T syntax) and AArch64
AARCH64 = "aarch64-unknown-linux-gnu"


class MCAError(RuntimeError):
    """llvm-mca is missing, does not know the CPU, or could not read the assembly."""


@functools.cache
def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"LLVM version (\d+)\.(\d+)\.(\d+)", out.stdout)
    return tuple(int(v) for v in found.groups()) if found else ()


@functools.cache
def find() -> str | None:
    """The llvm-mca binary: $LLVM_MCA, else the newest of llvm-mca and llvm-mca-NN on PATH (newer
    LLVMs model newer CPUs: znver4 from LLVM 16, znver5 from 19), or None."""
    if os.environ.get("LLVM_MCA"):
        return shutil.which(os.environ["LLVM_MCA"])
    names = ["llvm-mca"] + [f"llvm-mca-{v}" for v in range(40, 9, -1)]
    found = [path for path in map(shutil.which, names) if path]
    return max(found, key=_version, default=None)


def version() -> str:
    """LLVM's version of the llvm-mca in use, e.g. "19.1.7" ("" when there is none)."""
    binary = find()
    return ".".join(map(str, _version(binary))) if binary else ""


def missing_reason() -> str | None:
    """Why there is no model (no llvm-mca on this host, and how to get one), or None."""
    if find():
        return None
    return (
        "llvm-mca not found (set LLVM_MCA, or install LLVM 19 or newer: apt-get install llvm-19 on "
        "Debian 12)"
    )


@dataclass(frozen=True)
class Throughput:
    """One pass of a loop in LLVM's model of a CPU."""

    cpu: str  # the CPU LLVM modelled ("native" resolved to its name)
    cycles: float  # per pass, in the steady state
    instructions: int  # per pass
    busiest_resource: str  # the pipe or unit the model keeps busiest (LLVM's name for it)
    busiest_cycles: float  # its busy cycles per pass

    @property
    def bound(self) -> str:
        """What limits the loop: its busiest resource when that is busy (nearly) every cycle, else
        the latency of its dependency chains."""
        if self.busiest_cycles >= 0.9 * self.cycles:
            return self.busiest_resource
        return "latency"

    def as_dict(self) -> dict:
        return asdict(self) | {"bound": self.bound}


@functools.cache
def cpus(triple: str = X86) -> frozenset[str]:
    """The CPU names this llvm-mca models for `triple`."""
    binary = find()
    if not binary:
        return frozenset()
    out = subprocess.run(
        [binary, f"-mtriple={triple}", "-mcpu=help"],
        capture_output=True,
        text=True,
        check=False,
        input="",
    )
    names = re.findall(r"^\s+([a-z0-9_-]+)\s+- Select the", out.stdout + out.stderr, re.M)
    return frozenset(names) | {"native"}


def simulate(loop: list[str], cpu: str, triple: str = X86) -> Throughput:
    """The steady-state throughput of `loop` (assembly lines of `triple`: AT&T syntax on x86-64; a
    label and the jump back to it included or not) on LLVM's model of `cpu` ("native": this
    host's)."""
    binary = find()
    if not binary:
        raise MCAError(missing_reason())
    if cpu not in cpus(triple):
        raise MCAError(f"llvm-mca {version()} has no model of the CPU {cpu!r}")
    proc = subprocess.run(
        [
            binary,
            f"-mtriple={triple}",
            f"-mcpu={cpu}",
            f"-iterations={ITERATIONS}",
            "-json",
        ],
        input="\n".join(loop) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[0]
        raise MCAError(f"llvm-mca could not model the loop on {cpu}: {first}")
    report = json.loads(proc.stdout)
    region = report["CodeRegions"][0]
    summary = region["SummaryView"]
    names = report["TargetInfo"]["Resources"]
    busy = [0.0] * len(names)
    n = len(region["Instructions"])
    for use in region["ResourcePressureView"]["ResourcePressureInfo"]:
        if use["InstructionIndex"] < n:  # per instruction, cycles a pass (index n: their total)
            busy[use["ResourceIndex"]] += use["ResourceUsage"]
    top = max(range(len(names)), key=busy.__getitem__)
    return Throughput(
        cpu=report["TargetInfo"]["CPUName"],
        cycles=summary["TotalCycles"] / summary["Iterations"],
        instructions=summary["Instructions"] // summary["Iterations"],
        busiest_resource=names[top].split(".")[0],
        busiest_cycles=busy[top],
    )


def fma_loop(width: str, chains: int) -> list[str]:
    """A loop of `chains` independent FP32 FMAs on `width` registers ("xmm", "ymm" or "zmm"; "4s":
    AArch64's 4-lane NEON ones): the FMA peak of a model, the reference a kernel's multiply-adds
    per cycle are taken against."""
    if width == "4s":
        return (
            [".Lpeak:"]
            + [f"\tfmla\tv{i}.4s, v{chains}.4s, v{chains + 1}.4s" for i in range(chains)]
            + ["\tsubs\tx0, x0, 1", "\tb.ne\t.Lpeak"]
        )
    return (
        [".Lpeak:"]
        + [
            f"\tvfmadd231ps\t%{width}{chains}, %{width}{chains + 1}, %{width}{i}"
            for i in range(chains)
        ]
        + ["\tsubq\t$1, %rax", "\tjne\t.Lpeak"]
    )
