"""The launch contract both runners rely on: for every kernel, the buffers and the typed scalars
that im2win/cuda/launch.py builds match the kernel's parameter list in the source (checked by
parsing it, so a signature change that the CUDA launcher would not notice without a GPU fails here)."""

import dataclasses
import re

import pytest

from im2win.cuda.config import DEFAULT
from im2win.cuda.launch import (
    CONV_SCALARS,
    conv_launch,
    direct_launch,
    filter_launch,
    partial_elems,
    reduce_launch,
    split_slices,
    window_launch,
)
from im2win.cuda.source import kernel_source
from im2win.shapes import ConvShape

SHAPE = ConvShape(2, 3, 9, 11, 5, 3, 2, (2, 1), (1, 0))
STRIDES = (297, 99, 11, 1)


def _params(kernel: str) -> list[str]:
    source = kernel_source().replace("\\\n", " ")  # line continuations, as the preprocessor
    match = re.search(rf"\bvoid\s+{kernel}\(([^)]*)\)", source, re.S)
    assert match, kernel
    return [p.strip() for p in match.group(1).split(",")]


def _signature(kernel: str) -> list[str]:
    params = _params(kernel)
    return ["ptr" if "*" in p else ("l" if p.startswith("i64") else "i") for p in params]


def test_conv_scalars_are_named_as_in_the_kernel():
    """launch.CONV_SCALARS, by which callers find a conv launch's scalars, names im2win_conv's
    parameters after its five buffers, in their order."""
    assert tuple(p.split()[-1] for p in _params("im2win_conv")[5:]) == CONV_SCALARS


@pytest.mark.parametrize(
    "launch, buffers",
    [
        (window_launch(SHAPE, STRIDES), 2),
        (filter_launch(SHAPE), 2),
        (conv_launch(SHAPE, DEFAULT, True), 5),
        (reduce_launch(SHAPE, DEFAULT.replace(bk=2), 2), 2),
        (direct_launch(SHAPE, STRIDES, False), 4),
    ],
    ids=lambda v: getattr(v, "kernel", str(v)),
)
def test_launch_matches_kernel_signature(launch, buffers):
    sig = _signature(launch.kernel)
    assert sig[:buffers] == ["ptr"] * buffers
    assert "".join(sig[buffers:]) == launch.types
    assert len(launch.args) == len(launch.types)
    assert len(launch.grid) == 3 and min(launch.grid) >= 1 and launch.block >= 1


CONV12 = ConvShape(128, 512, 7, 7, 512, 3, 3)  # 100 tiles of 128 x 128 at batch 128
CONV8 = ConvShape(128, 64, 112, 112, 128, 3, 3)


def test_split_k_only_where_tiles_cannot_fill_the_gpu():
    """Automatic split-K (split_k=0) on an H100's 132 SMs: conv12's 100 tiles split to fill the
    264 block slots; conv8's 11,858 tiles and any layer without a device (sms None) do not; an
    explicit split_k is taken as it is, at most one slice per BK-deep step."""
    assert split_slices(CONV12, DEFAULT, 132) > 1
    assert split_slices(CONV8, DEFAULT, 132) == 1
    assert split_slices(CONV12, DEFAULT, None) == 1
    assert split_slices(CONV12, DEFAULT.replace(split_k=3), None) == 3
    tiny = ConvShape(1, 1, 3, 3, 4, 2, 2)  # T = 4: one step of BK = 8
    assert split_slices(tiny, DEFAULT.replace(split_k=4), 132) == 1
    launch = conv_launch(CONV12, DEFAULT, False, split_slices(CONV12, DEFAULT, 132))
    assert launch.grid[2] == split_slices(CONV12, DEFAULT, 132)
    t_split = launch.args[CONV_SCALARS.index("t_split")]
    assert t_split % DEFAULT.bk == 0 and t_split * launch.grid[2] >= 4608


def test_tuned_configs_this_machines_search_first_then_the_shipped_ones(tmp_path, monkeypatch):
    """runtime.resolve_config's lookup: a configuration this machine's autotuner stored wins over
    the one shipped in the package, which wins over DEFAULT; other shapes get DEFAULT."""
    from im2win.cuda import tuned

    monkeypatch.setenv("IM2WIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuned, "SHIPPED", tmp_path / "shipped")
    shipped, local = DEFAULT.replace(bm=64, tm=4), DEFAULT.replace(split_k=2)
    assert tuned.stored("sm_90", CONV12) is None
    tuned.store("sm_90", CONV12, shipped, 1.0, 10, tuned.SHIPPED)
    assert tuned.stored("sm_90", CONV12)[0] == "shipped"
    assert tuned.stored("sm_90", CONV12)[1] == shipped
    assert tuned.stored("sm_80", CONV12) is None  # another architecture
    tuned.store("sm_90", CONV12, local, 0.9, 10, None)
    assert tuned.stored("sm_90", CONV12)[0] == "local"
    assert tuned.stored("sm_90", CONV12)[1] == local
    assert tuned.stored("sm_90", CONV8) is None


def test_the_fastest_correct_variant_of_a_gpu_run_becomes_the_tuned_one(tmp_path, monkeypatch):
    """python -m im2win.cuda.tuned RAW --ship: per layer, the fastest ablation variant whose output
    passed the FP32 check, for the run's architecture; `im2win` counts only where it ran DEFAULT."""
    import json

    from harness import results
    from im2win.cuda import tuned
    from im2win.cuda.config import VARIANTS

    monkeypatch.setattr(tuned, "SHIPPED", tmp_path / "shipped")

    def rec(shape, impl, ms, correct=True, **extra):
        return {
            "layer": "convX",
            "impl": impl,
            "min_ms": ms,
            "correct": correct,
            **shape.as_dict(),
            **extra,
        }

    records = [
        rec(CONV12, "im2win", 3.0, tile_source="default") | {"layer": "conv12"},
        rec(CONV12, "im2win_band", 2.0) | {"layer": "conv12"},
        rec(CONV12, "im2win_paper_tile", 1.0, correct=False) | {"layer": "conv12"},
        rec(CONV12, "torch", 0.5) | {"layer": "conv12"},  # a peer, not a variant
        rec(CONV8, "im2win", 1.0, tile_source="shipped") | {"layer": "conv8"},
        rec(CONV8, "im2win_async_copy", 4.0) | {"layer": "conv8"},
    ]
    raw = results.write_run(
        "im2win-gpu",
        config={"device_arch": "sm_90"},
        environment={},
        timing_method="test",
        records=records,
        results_dir=tmp_path,
        command="test",
    )
    assert tuned.main([str(raw), "--ship"]) == 0
    assert tuned.stored("sm_90", CONV12)[1] == VARIANTS["band"]
    assert tuned.stored("sm_90", CONV8)[1] == VARIANTS["async_copy"]
    tuner = DEFAULT.replace(bm=64, tm=4)  # an autotuner's find, faster than conv8's variant
    tuned.store("sm_90", CONV8, tuner, 0.5, 40, tuned.SHIPPED)
    assert tuned.main([str(raw), "--ship"]) == 0
    assert tuned.stored("sm_90", CONV8)[1] == tuner  # kept
    entry = json.loads(tuned.tuned_path("sm_90", tuned.SHIPPED).read_text())
    assert raw.name in next(iter(entry.values()))["source"]
    with pytest.raises(SystemExit, match="im2win-gpu run file"):
        tuned.main([str(tmp_path / "missing.json")])
    monkeypatch.setattr(tuned, "run_files", lambda experiment: [])
    with pytest.raises(SystemExit):  # no run file given and none in results/raw/im2win-gpu
        tuned.main(["--ship"])
    monkeypatch.setattr(tuned, "run_files", lambda experiment: [raw])
    assert tuned.main(["--ship"]) == 0  # the newest run file (nothing faster to store now)


def test_a_runs_fastest_variant_over_its_layers_becomes_the_architectures_default(
    tmp_path, monkeypatch, capsys
):
    """python -m im2win.cuda.tuned RAW [--ship] also stores, as the architecture's default for
    every shape no search has tuned, the variant with the greatest geometric mean of (the layer's
    fastest time / its time) among those correct on every layer; each layer keeps its own
    fastest; this machine's default wins over the package's; a run of fewer than
    MIN_DEFAULT_LAYERS layers stores none."""
    from harness import results
    from im2win.cuda import tuned
    from im2win.cuda.config import VARIANTS
    from im2win.shapes import PAPER_GPU_LAYERS

    monkeypatch.setenv("IM2WIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tuned, "SHIPPED", tmp_path / "shipped")
    names = ["conv5", "conv8", "conv10", "conv12"]
    ms = {  # variant: ms on each layer (None: its output failed the FP32 check there)
        "im2win": [1.0, 1.0, 1.0, 1.0],
        "im2win_sgemm_tile": [0.8, 0.8, 0.8, 1.3],  # geomean of fastest / its: 0.78
        "im2win_band": [0.5, 2.0, 2.0, 2.0],  # the fastest on conv5 only: 0.50
        "im2win_paper_tile": [0.7, 0.7, 0.7, None],  # fastest on two, wrong on one: no default
    }
    records = [
        {
            "layer": layer,
            "impl": impl,
            "min_ms": t if t is not None else 0.1,
            "correct": t is not None,
            **PAPER_GPU_LAYERS[layer].as_dict(),
        }
        | ({"tile_source": "default"} if impl == "im2win" else {})
        for impl, times in ms.items()
        for layer, t in zip(names, times, strict=True)
    ]

    def run(n_layers: int, **config):
        return results.write_run(
            "im2win-gpu",
            config={"device_arch": "sm_90", **config},
            environment={},
            timing_method="test",
            records=[r for r in records if r["layer"] in names[:n_layers]],
            results_dir=tmp_path / f"{n_layers}{'-cut' if config else ''}",
            command="test",
        )

    other = PAPER_GPU_LAYERS["conv9"]
    assert tuned.main([str(run(tuned.MIN_DEFAULT_LAYERS - 1)), "--ship"]) == 0
    assert "no default stored: the run measured fewer than 4 layers" in capsys.readouterr().out
    assert tuned.stored("sm_90", other) is None
    # a run cut short (here before conv11 and conv12, as a time limit does) gives no default
    assert tuned.main([str(run(4, interrupted_before=["conv11", "conv12"])), "--ship"]) == 0
    assert "no default stored: the run stopped before all of its layers" in capsys.readouterr().out
    assert tuned.stored("sm_90", other) is None
    four = run(4)
    assert tuned.main([str(four), "--ship"]) == 0
    assert (
        "default for the shapes no search has tuned: sgemm_tile (0.78x" in capsys.readouterr().out
    )
    assert tuned.stored("sm_90", other)[1] == VARIANTS["sgemm_tile"]
    assert tuned.stored("sm_90", other)[0] == "shipped (architecture)"
    assert tuned.stored("sm_80", other) is None  # another architecture
    fastest = {"conv5": "band", "conv8": "paper_tile", "conv10": "paper_tile", "conv12": "im2win"}
    for layer, variant in fastest.items():
        assert tuned.stored("sm_90", PAPER_GPU_LAYERS[layer])[1] == VARIANTS[variant]
        assert tuned.stored("sm_90", PAPER_GPU_LAYERS[layer])[0] == "shipped"
    local = DEFAULT.replace(bm=64, tm=4)
    tuned._write("sm_90", tuned.ARCH_DEFAULT, {"config": dataclasses.asdict(local)}, None)
    assert tuned.stored("sm_90", other)[1] == local
    assert tuned.stored("sm_90", other)[0] == "local (architecture)"
    # and the run's rendering names it
    from reproductions.im2win_gpu_report import _default_line

    assert "this run, for every shape no search has tuned: sgemm_tile, at 0.78x" in _default_line(
        results.load_run(four)
    )


@pytest.fixture
def pretend_sm90(fake_gpu, tmp_path, monkeypatch):
    """A pretended sm_90 GPU (132 SMs, 48 KB of shared memory a block) whose tuned-configuration
    folders, this machine's and the package's, are empty ones of the test's own."""
    import types

    import torch

    from im2win.cuda import tuned

    monkeypatch.setattr(tuned, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setattr(tuned, "cache_dir", lambda: tmp_path / "cache")
    props = types.SimpleNamespace(
        name="PretendGPU", multi_processor_count=132, shared_memory_per_block=48 * 1024
    )
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))


def test_an_architecture_default_that_cannot_launch_for_a_shape_leaves_it_default(pretend_sm90):
    """resolve_config takes the architecture's default only where it can launch: the window-band
    kernel in cuBLAS's tiling, measured on narrow filters, needs 71 KB of shared memory on a
    31 x 31 filter of stride 16, over the 48 KB static limit, so that shape runs DEFAULT (and a
    run records "default") instead of failing."""
    from im2win.cuda import runtime, tuned
    from im2win.cuda.config import VARIANTS
    from im2win.cuda.launch import for_shape

    band = VARIANTS["sgemm_tile_band"]
    tuned._write("sm_90", tuned.ARCH_DEFAULT, {"config": dataclasses.asdict(band)}, tuned.SHIPPED)
    narrow = ConvShape(2, 64, 16, 16, 64, 3, 3)
    wide = ConvShape(1, 8, 96, 96, 16, 31, 31, (16, 16))
    assert runtime.resolve_config(narrow, 0) == for_shape(band, narrow)
    assert runtime.tile_source(narrow, 0) == "shipped (architecture)"
    assert runtime.launch_problems(for_shape(band, wide), 0)
    assert runtime.resolve_config(wide, 0) == for_shape(DEFAULT, wide)
    assert runtime.tile_source(wide, 0) == "default"
    assert not runtime.launch_problems(runtime.resolve_config(wide, 0), 0)


def test_a_call_is_planned_once_while_the_tuned_files_stay(pretend_sm90, monkeypatch):
    """runtime.plan: the launches conv2d makes for a shape, input strides and bias, made once and
    kept; a configuration the autotuner stores since is taken up at the next call."""
    from im2win.cuda import runtime, tuned

    kernels = {name: f"<{name}>" for name in runtime.KERNELS}
    monkeypatch.setattr(runtime, "_kernels", lambda config, arch, index: kernels | {"c": config})
    runtime._plan.cache_clear()
    strides = (CONV12.c * CONV12.h * CONV12.w, CONV12.h * CONV12.w, CONV12.w, 1)
    first = runtime.plan(CONV12, strides, True, 0)
    assert runtime.plan(CONV12, list(strides), True, 0) is first
    config = runtime.resolve_config(CONV12, 0)
    slices = split_slices(CONV12, config, 132)
    assert first.kernels["c"] == config.kernel(slices)
    assert first.launches[:3] == (
        window_launch(CONV12, strides),
        filter_launch(CONV12),
        conv_launch(CONV12, config, True, slices),
    )
    assert len(first.launches) == 3 + (slices > 1)
    for launch, (kernel, launch_config, scalars) in zip(
        first.launches, first.prepared, strict=True
    ):
        assert kernel == f"<{launch.kernel}>" and launch_config.grid == launch.grid
        assert launch_config.block == (launch.block, 1, 1) and scalars == launch.scalars()
    assert first.partial_elems == partial_elems(CONV12, config, slices)
    assert runtime.plan(CONV12, strides, False, 0).launches[2].args[0] == 0  # has_bias
    tuned.store("sm_90", CONV12, DEFAULT.replace(bm=64, tm=4), 1.0, 10, None)
    again = runtime.plan(CONV12, strides, True, 0)
    assert again is not first and again.kernels["c"].bm == 64


def test_a_fused_call_plans_no_window_tensor(pretend_sm90, monkeypatch):
    """A fused configuration (the window transform fused into the convolution): no window launch,
    no window tensor in the plan or in workspace_elems, the convolution reading x. Its vec_a by
    the input: float4 loads of x only where channels_last and 16-byte aligned (2), 4 channels of
    one (r, s) a run where C % 4 == 0 (1), else each value apart (0)."""
    from im2win.cuda import runtime
    from im2win.cuda.config import VARIANTS
    from im2win.metrics import filter_elems

    monkeypatch.setattr(runtime, "_kernels", lambda config, arch, index: {})
    monkeypatch.setattr(runtime, "_prepared", lambda kernels, launch: None)
    runtime._plan.cache_clear()
    fused = VARIANTS["fused"]
    nchw = (CONV12.c * CONV12.h * CONV12.w, CONV12.h * CONV12.w, CONV12.w, 1)
    channels_last = (nchw[0], 1, CONV12.w * CONV12.c, CONV12.c)
    plan = runtime.plan(CONV12, nchw, False, 0, fused)
    config = runtime.resolve_config(CONV12, 0, fused)
    slices = split_slices(CONV12, config, 132)
    assert plan.fused and plan.window_elems == 0
    assert plan.launches[:2] == (
        filter_launch(CONV12),
        conv_launch(CONV12, config, False, slices, nchw),
    )
    assert runtime.workspace_elems(CONV12, 0, fused) == filter_elems(CONV12) + partial_elems(
        CONV12, config, slices
    )

    def vec_a(shape, strides, aligned=True):
        conv = runtime.plan(shape, strides, False, 0, fused, aligned).launches[1]
        return conv.args[CONV_SCALARS.index("vec_a")]

    assert vec_a(CONV12, channels_last) == 2
    assert vec_a(CONV12, channels_last, aligned=False) == 1
    assert vec_a(CONV12, nchw) == 1
    c3 = ConvShape(2, 3, 16, 16, 8, 3, 3)
    assert vec_a(c3, (768, 1, 48, 3)) == 0  # channels_last, but C = 3
    unfused = runtime.plan(CONV12, nchw, False, 0, DEFAULT)
    assert not unfused.fused and unfused.launches[0].kernel == "im2win_window"


def test_a_fused_kernel_takes_wide_offsets_by_its_input_not_a_window_tensor():
    """for_shape's 64-bit offsets: a window tensor past 2**31 floats needs them, but a fused
    kernel reads no window tensor; its input, through its strides, decides."""
    from im2win.cuda.config import VARIANTS
    from im2win.cuda.launch import for_shape

    fused = VARIANTS["fused"]
    # windows 11 rows high, of stride 1, over a 216M-float input: a 2.3G-float window tensor
    shape = ConvShape(300, 3, 490, 490, 8, 11, 1)
    assert for_shape(DEFAULT, shape).wide_index
    assert not for_shape(fused, shape).wide_index
    # the same input as a view into a storage 10 times as long: offsets past 2**31
    strides = (3 * 490 * 490 * 10, 490 * 490, 490, 1)
    assert for_shape(fused, shape, strides).wide_index
