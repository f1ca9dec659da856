"""Theoretical occupancy from a kernel's resource report (the CUDA occupancy calculator's formula).

Per-SM limits from NVIDIA's CUDA C++ Programming Guide, table "Technical Specifications per Compute
Capability" (registers, threads, blocks, shared memory per SM; register allocation per warp in units
of 256; 1 KiB of shared memory reserved per block), and its FP32 lanes from the Guide's throughput
table of arithmetic instructions (32-bit floating-point multiply-add results a clock per SM).
"""

from __future__ import annotations

from dataclasses import dataclass

from im2win.cuda.compile import Resources


@dataclass(frozen=True)
class SmLimits:
    threads: int
    blocks: int
    registers: int
    shared_bytes: int  # usable shared memory per SM
    fp32_lanes: int  # FP32 multiply-adds per clock per SM: fp32_lanes / 32 warp FFMAs a clock


ARCH_LIMITS = {
    "sm_80": SmLimits(2048, 32, 65536, 164 * 1024, fp32_lanes=64),
    "sm_86": SmLimits(1536, 16, 65536, 100 * 1024, fp32_lanes=128),
    "sm_89": SmLimits(1536, 24, 65536, 100 * 1024, fp32_lanes=128),
    "sm_90": SmLimits(2048, 32, 65536, 228 * 1024, fp32_lanes=128),
}
SHARED_WAVEFRONTS_PER_CLOCK = 1  # an SM's shared memory: 32 banks of 4 bytes, 128 bytes a clock
WARP = 32
REGISTER_UNIT = 256  # registers are allocated per warp in units of 256
RESERVED_SHARED = 1024  # per block


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    fraction: float  # active warps / maximum warps per SM
    limited_by: str


def theoretical_occupancy(res: Resources, threads: int) -> Occupancy:
    """Blocks of `threads` threads that fit on one SM of res.arch, and the warp occupancy."""
    lim = ARCH_LIMITS[res.arch]
    warps = -(-threads // WARP)
    regs_per_warp = -(-res.registers * WARP // REGISTER_UNIT) * REGISTER_UNIT
    by = {
        "threads": lim.threads // (warps * WARP),
        "blocks": lim.blocks,
        "registers": lim.registers // (regs_per_warp * warps) if res.registers else lim.blocks,
        "shared memory": lim.shared_bytes // (res.shared_bytes + RESERVED_SHARED),
    }
    limited_by = min(by, key=by.get)
    blocks = by[limited_by]
    return Occupancy(blocks, blocks * warps, blocks * warps * WARP / lim.threads, limited_by)
