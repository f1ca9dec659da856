"""Every GPU kernel variant and autotuning candidate compiles with NVRTC for the real targets.

No GPU or driver is needed for NVRTC; tests skip with the reason if cuda-python's NVRTC is missing.
"""

import pytest

from im2win.cuda import compile as nvrtc
from im2win.cuda.config import AUTOTUNE_CANDIDATES, DEFAULT, VARIANTS, TileConfig
from im2win.cuda.occupancy import theoretical_occupancy

try:
    VERSION = nvrtc.nvrtc_version()
except nvrtc.NvrtcUnavailable as exc:
    pytest.skip(f"NVRTC unavailable: {exc}", allow_module_level=True)

CONFIGS = {
    **VARIANTS,
    **{f"candidate{i}": c for i, c in enumerate(AUTOTUNE_CANDIDATES)},
    "im2win_wide_index": DEFAULT.replace(wide_index=True),
    "im2win_split_k": DEFAULT.kernel(slices=2),
}


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_compiles_to_cubin_with_a_report(name, arch):
    compiled = nvrtc.compile_cubin(CONFIGS[name], arch)
    assert compiled.cubin[:4] == b"\x7fELF"
    assert set(compiled.resources) == set(nvrtc.KERNELS)
    conv = compiled.resources["im2win_conv"]
    assert conv.arch == arch and 0 < conv.registers <= 255
    assert conv.shared_bytes == CONFIGS[name].shared_bytes
    assert (conv.spill_stores, conv.spill_loads) == (0, 0), conv


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_the_sgemm_tile_keeps_its_128_accumulators_in_registers(arch):
    """No stack frame either: with its store loops left rolled, the accumulators were indexed at
    run time, so kept in local memory (512 bytes a thread, written and read back every tile)."""
    tile = VARIANTS["sgemm_tile"]
    for config in (tile, tile.kernel(slices=2)):
        conv = nvrtc.compile_cubin(config, arch).resources["im2win_conv"]
        assert (conv.spill_stores, conv.spill_loads, conv.stack_bytes) == (0, 0, 0), conv


@pytest.mark.parametrize("arch", nvrtc.ARCHS)
def test_default_configuration_does_not_spill(arch):
    """Neither the default kernel nor the one compiled for split-K launches spills."""
    for config in (DEFAULT, DEFAULT.kernel(slices=2)):
        for res in nvrtc.compile_cubin(config, arch).resources.values():
            assert res.spill_stores == 0 and res.spill_loads == 0, res


def test_ptxas_report_parsing():
    log = """ptxas info    : Compiling entry function 'k' for 'sm_90'
ptxas info    : Function properties for k
ptxas         .     8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 400 bytes cmem[0]"""
    r = nvrtc.parse_ptxas_log(log)["k"]
    assert (r.registers, r.shared_bytes, r.spill_stores, r.spill_loads, r.stack_bytes) == (
        40,
        2048,
        12,
        16,
        8,
    )


def test_occupancy_formula():
    res = nvrtc.Resources(
        "k", "sm_90", registers=64, shared_bytes=12544, spill_stores=0, spill_loads=0, stack_bytes=0
    )
    occ = theoretical_occupancy(res, 256)
    assert (occ.blocks_per_sm, occ.fraction, occ.limited_by) == (4, 0.5, "registers")
    heavy = nvrtc.Resources("k", "sm_86", 32, 60 * 1024, 0, 0, 0)
    assert theoretical_occupancy(heavy, 128).limited_by == "shared memory"


def test_bad_configuration_and_arch_are_clear_errors():
    with pytest.raises(ValueError, match="threads"):
        nvrtc.compile_cubin(TileConfig(bm=256, bn=256, tm=1, tn=1), "sm_90")
    with pytest.raises(ValueError, match="architecture"):
        nvrtc.compile_cubin(DEFAULT, "volta")
    # a well-formed name this NVRTC does not compile for: one line that lists what it does
    assert "sm_90" in nvrtc.supported_archs() and "sm_99" not in nvrtc.supported_archs()
    with pytest.raises(ValueError, match=r"does not compile for sm_99; it compiles for .*sm_90"):
        nvrtc.compile_cubin(DEFAULT, "sm_99")


def test_prebuild_fills_the_cache_in_parallel(tmp_path, monkeypatch):
    monkeypatch.setenv("IM2WIN_CACHE_DIR", str(tmp_path))
    kernels = {DEFAULT.replace(bk=16), DEFAULT.replace(bk=16).kernel(slices=2)}
    assert nvrtc.prebuild(kernels, "sm_90", jobs=2) == 2
    assert len(list((tmp_path / "cuda").glob("*.cubin"))) == 2


def test_prebuild_command_line_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        nvrtc.main(["--arch", "volta"])
    assert exc.value.code == 2  # argparse: "--arch volta: expected like sm_80, ..."
    with pytest.raises(SystemExit) as exc:
        nvrtc.main(["--arch", "sm_99"])  # before anything compiles, not NVRTC's empty log
    assert exc.value.code == 2
    assert "--arch sm_99: NVRTC" in capsys.readouterr().err
