"""Device resolution for every `--device` option, on a pretended GPU (no GPU needed)."""

import pytest
import torch

from harness.device import resolve_device


def test_fake_gpu_set_device_refuses_an_index_free_device(fake_gpu):
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))  # the line that crashed on a real H100


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "auto"])
def test_cuda_resolves_to_an_indexed_current_device(fake_gpu, name):
    assert resolve_device(name) == torch.device("cuda", 0)
    assert fake_gpu["set"] == [0]


def test_cuda_under_torchrun_is_the_local_rank(fake_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)


@pytest.mark.parametrize(
    "name, message",
    [("cuda:3", "GPU 3 does not exist"), ("bogus", "unknown device"), ("mps", "only cpu and cuda")],
)
def test_bad_devices_are_one_line_errors(fake_gpu, name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


def test_no_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda")


class _Reached(Exception):
    pass


def test_repro_im2win_gpu_gets_past_device_selection(fake_gpu, monkeypatch):
    from reproductions import im2win_gpu

    def stop(*_, **__):
        raise _Reached

    monkeypatch.setattr(im2win_gpu, "gpu_shapes", stop)
    with pytest.raises(_Reached):
        im2win_gpu.run(scale="quick", device="cuda", progress=False)
    assert fake_gpu["set"] == [0]


@pytest.mark.parametrize("command", ["evaluate", "extract"])
def test_supersam_commands_get_past_device_selection(fake_gpu, monkeypatch, tmp_path, command):
    from supersam_min import cli, storage

    seen = []

    def stop(path, subnet=None, device="cpu"):
        seen.append(device)
        raise _Reached

    monkeypatch.setattr(storage, "load_model", stop)  # evaluate's
    monkeypatch.setattr(storage, "load_supernet", stop)  # extract's
    argv = {
        "evaluate": ["evaluate", "--model", str(tmp_path / "m")],
        "extract": ["extract", "--supernet", str(tmp_path), "--out", str(tmp_path / "o")],
    }[command]
    with pytest.raises(_Reached):
        cli.run_command([*argv, "--device", "cuda"])
    assert seen == [torch.device("cuda", 0)]


def _gpu_run_with(layer, monkeypatch, tmp_path) -> tuple[dict, str]:
    """`repro run im2win-gpu` on the pretended GPU with `layer` measuring each layer: the raw
    file and its rendering."""
    import json

    from reproductions import im2win_gpu
    from reproductions.cli import main

    monkeypatch.setattr(im2win_gpu, "_layer", layer)
    monkeypatch.setattr(im2win_gpu.runtime, "device_arch", lambda index: "sm_90")
    monkeypatch.setattr(im2win_gpu.environment, "capture", lambda: {"gpu": {"name": "FakeGPU"}})
    raw = im2win_gpu.run(scale="quick", device="cuda", progress=False, results_dir=tmp_path)
    assert main(["render", "im2win-gpu", "--raw", str(raw), "--results-dir", str(tmp_path)]) == 0
    return json.loads(raw.read_text()), (tmp_path / "im2win-gpu" / "README.md").read_text()


def test_repro_im2win_gpu_keeps_the_finished_layers_when_interrupted(
    fake_gpu, monkeypatch, tmp_path
):
    """A time limit's SIGINT (or Ctrl-C) mid-run writes the layers measured so far, says which
    were not, and the report says so; nothing measured is lost."""

    def layer(name, shape, gen, cfg):
        if name == "conv2":
            raise KeyboardInterrupt
        return [{"layer": name, "impl": "im2win", "tflops": 1.0, "correct": True}]

    doc, text = _gpu_run_with(layer, monkeypatch, tmp_path)
    assert doc["config"]["layers"] == ["conv1"]
    assert doc["config"]["interrupted_before"][:2] == ["conv2", "conv3"]
    assert [r["layer"] for r in doc["records"]] == ["conv1"]
    assert "Interrupted" in text


def test_a_failed_measurement_is_recorded_and_the_run_goes_on(monkeypatch):
    """One variant the GPU refuses (or a cuDNN engine that errors when run) costs the run that
    measurement, recorded with its error, not every layer after it."""
    from reproductions import im2win_gpu

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    def refused():
        raise RuntimeError("CUDA_ERROR_INVALID_VALUE: too many resources requested\nmore")

    assert im2win_gpu._guarded("conv1", "im2win_band", refused) == [
        {
            "layer": "conv1",
            "impl": "im2win_band",
            "failed": "RuntimeError: CUDA_ERROR_INVALID_VALUE: too many resources requested",
        }
    ]
    assert im2win_gpu._guarded("conv1", "im2win", lambda: [{"tflops": 1.0}]) == [{"tflops": 1.0}]

    def lost():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", lost)
    with pytest.raises(im2win_gpu.ContextLost, match="im2win_band on conv1 failed .*illegal"):
        im2win_gpu._guarded("conv1", "im2win_band", refused)


def test_a_lost_gpu_keeps_the_layers_measured_before_it(fake_gpu, monkeypatch, tmp_path):
    from reproductions import im2win_gpu

    def layer(name, shape, gen, cfg):
        if name == "conv2":
            raise im2win_gpu.ContextLost("im2win on conv2 failed (x); the GPU failed after it: y")
        return [
            {"layer": name, "impl": "im2win", "tflops": 1.0, "correct": True},
            {"layer": name, "impl": "im2win_band", "failed": "RuntimeError: a | b"},
            {"layer": name, "impl": "sgemm", "failed": "RuntimeError: no"},
        ]

    doc, text = _gpu_run_with(layer, monkeypatch, tmp_path)
    assert doc["config"]["layers"] == ["conv1"]
    assert doc["config"]["stopped_by"].startswith("im2win on conv2 failed")
    assert "Stopped: im2win on conv2 failed" in text
    assert "| conv1 | im2win_band | RuntimeError: a \\| b |" in text  # the failures, listed
    assert "| conv1 | 1.00 | n/a (-) | failed | n/a | n/a |" in text  # sgemm failed: no ratio


def test_repro_im2win_gpu_measures_every_variant_on_a_pretended_gpu(
    fake_gpu, monkeypatch, tmp_path
):
    """The whole of a layer's measurement on a GPU that is not there: the kernels run under the
    OpenCL emulation, the CUDA-only calls are stood in for. Each implementation and ablation
    variant gets its record (tile, split-K, analytic memory) without failing, and every output
    passes the float64 check: what a GPU run would lose if this bookkeeping broke."""
    import types

    from harness import timing
    from im2win.cuda import opencl, tuned
    from im2win.shapes import PAPER_GPU_LAYERS, reduced
    from reproductions import im2win_gpu

    # no stored tiles: neither the package's for sm_90 (a GPU run ships an architecture default
    # that every shape then takes) nor this machine's searches
    monkeypatch.setattr(tuned, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setattr(tuned, "cache_dir", lambda: tmp_path / "cache")

    try:
        opencl.device_name()
    except opencl.OpenCLUnavailable as exc:
        pytest.skip(f"no OpenCL CPU device: {exc}")
    props = types.SimpleNamespace(
        name="PretendGPU", multi_processor_count=132, shared_memory_per_block=48 * 1024
    )
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (9, 0))
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 4096)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    calls = []  # the events lists conv2d was given (the phases' timing)

    def conv2d(x, w, b, stride, padding, config=None, events=None):
        calls.append(events)  # no tile stored (above): None is DEFAULT
        return opencl.conv2d(x, w, b, stride, padding, config or im2win_gpu.runtime.DEFAULT)

    def phases(fn, warmup, repeat):  # one call, no events to read here
        fn(events := [])
        return {"im2win_conv": 1.0} if calls[-1] is events else {}

    monkeypatch.setattr(im2win_gpu.runtime, "conv2d", conv2d)
    monkeypatch.setattr(timing, "measure_cuda", lambda fn, warmup, repeat: timing.measure(fn, 0, 1))
    monkeypatch.setattr(timing, "measure_cuda_phases", phases)

    shape = reduced(PAPER_GPU_LAYERS["conv5"], max_out=3)
    cfg = {"batch": 1, "warmup": 0, "repeat": 1}
    records = im2win_gpu._layer("conv5", shape, torch.Generator().manual_seed(0), cfg)
    by_impl = {r["impl"]: r for r in records}
    assert by_impl["sgemm"]["failed"]  # its operands are made on the device: none here
    measured = [r for r in records if r["impl"] not in ("sgemm", "cudnn_engines")]
    assert [(r["impl"], r["failed"]) for r in measured if r.get("failed")] == []
    assert by_impl["im2win"]["window_copy_failed"]  # its roofline is made on the device: none here
    assert by_impl["im2win"]["window_rows_failed"]  # (the tensors are CPU ones here)
    assert all(r["correct"] for r in measured), [r["impl"] for r in measured if not r["correct"]]
    variants = [f"im2win_{v}" for v in im2win_gpu.VARIANTS if v != "im2win"]
    variants += list(im2win_gpu.CHANNELS_LAST)  # variants run on a channels_last copy of x
    assert {"im2win", "direct", "im2col_gemm", "torch", *variants} <= set(by_impl)
    for impl in ["im2win", *variants]:
        assert by_impl[impl]["tile"] and by_impl[impl]["split_k"] >= 1, impl
        assert by_impl[impl]["analytic_mem_bytes"] > 0, impl
    assert by_impl["im2win"]["tile_source"] == "default"
    assert by_impl["im2win"]["phases_ms"] == {"im2win_conv": 1.0}  # timed through conv2d's events


def test_cudnn_engines_on_a_stand_in_frontend_share_one_workspace(monkeypatch):
    """The calls im2win.cuda.cudnn_engines makes, with the arguments nvidia-cudnn-frontend 1.32
    takes (checked against that package up to graph.validate(), which needs a driver), on a
    stand-in that computes with F.conv2d: an engine that cannot be built is kept with the reason,
    and the engines share one workspace grown to the largest asked, never one each."""
    import sys
    import types

    from im2win.cuda import cudnn_engines

    sizes = {0: 64, 1: 4096, 2: 1024}
    seen_workspaces = []

    class Tensor:
        def __init__(self, dim, stride=None):
            self.dim, self.stride = dim, stride

        def set_output(self, value):
            return self

        def set_data_type(self, dtype):
            return self

        def get_dim(self):
            return self.dim

        def get_stride(self):
            return torch.empty(self.dim).stride()

    class Graph:
        def __init__(self, io_data_type, intermediate_data_type, compute_data_type, handle):
            self.built = None

        def tensor(self, name, dim, stride, data_type):
            return Tensor(dim, stride)

        def conv_fprop(self, image, weight, padding, stride, dilation):
            self.conv = (padding, stride)
            x, w = image.dim, weight.dim
            p = [(x[i + 2] + 2 * padding[i] - w[i + 2]) // stride[i] + 1 for i in range(2)]
            return Tensor([x[0], w[0], *p])

        def validate(self):
            pass

        def build_operation_graph(self):
            pass

        def create_execution_plans(self, heuristics):
            assert heuristics == ["A", "B", "FALLBACK"]

        def get_execution_plan_count(self):
            return 4

        def get_plan_name_at_index(self, index):
            return f"eng{index}"

        def build_plan_at_index(self, index):
            if index == 3:
                raise RuntimeError("CUDNN_STATUS_NOT_SUPPORTED: no kernel for this problem\nmore")

        def get_workspace_size_plan_at_index(self, index):
            return sizes[index]

        def execute_plan_at_index(self, tensor_dict, workspace, index, handle):
            assert workspace.numel() >= sizes[index]
            seen_workspaces.append(workspace.numel())
            x, w, y = tensor_dict.values()
            padding, stride = self.conv
            y.copy_(torch.nn.functional.conv2d(x, w, None, stride, padding))

    fake = types.SimpleNamespace(
        create_handle=lambda: "handle",
        data_type=types.SimpleNamespace(FLOAT="float"),
        heur_mode=types.SimpleNamespace(A="A", B="B", FALLBACK="FALLBACK"),
        pygraph=Graph,
    )
    monkeypatch.setitem(sys.modules, "cudnn", fake)
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    found = cudnn_engines.engines(x, w, (2, 1), (1, 0))
    assert [(e.name, e.workspace_bytes) for e in found] == [
        ("eng0", 64),
        ("eng1", 4096),
        ("eng2", 1024),
        ("eng3", None),
    ]
    assert found[3].run is None and found[3].reason.startswith("CUDNN_STATUS_NOT_SUPPORTED")
    want = torch.nn.functional.conv2d(x, w, None, (2, 1), (1, 0))
    for e in found[:3]:
        torch.testing.assert_close(e.run(), want)
    assert seen_workspaces == [64, 4096, 4096]  # grown once to the largest, then kept
