"""The OpenTuner tile search, driven here by the OpenCL emulation's time (plumbing only: the
real objective is CUDA-event time on a GPU)."""

import json
import time

import pytest
import torch

from im2win.cuda import opencl
from im2win.cuda.autotune import SPACE, tune
from im2win.cuda.config import AUTOTUNE_CANDIDATES
from im2win.cuda.tuned import shape_key, stored, tuned_path
from im2win.shapes import ConvShape

pytest.importorskip("opentuner")
try:
    opencl.device_name()
except opencl.OpenCLUnavailable as exc:
    pytest.skip(f"no OpenCL CPU device: {exc}", allow_module_level=True)


def test_every_known_good_tile_is_a_point_of_the_search_space():
    """The candidates seed the search as indices into SPACE: a value outside it would stop every
    search before its first measurement."""
    for config in AUTOTUNE_CANDIDATES:
        for name, values in SPACE.items():
            assert getattr(config, name) in values, (config, name)


def test_search_stores_a_launchable_best_and_skips_impossible_configs(tmp_path):
    shape = ConvShape(1, 4, 9, 9, 8, 3, 3)
    x, w = torch.randn(shape.input_shape()), torch.randn(shape.weight_shape())
    seen = []

    def objective(config):
        assert not config.problems(), config  # never asked to measure an impossible config
        seen.append(config)
        start = time.perf_counter()
        opencl.conv2d(x, w, None, 1, 0, config)
        return (time.perf_counter() - start) * 1e3

    best, ms = tune(shape, "emulated", objective, evaluations=3, folder=tmp_path)
    assert len(seen) == 3 and best in seen and ms > 0
    assert stored("emulated", shape, tmp_path)[1] == best
    assert shape_key(shape) in tuned_path("emulated", tmp_path).read_text()
    assert stored("emulated", ConvShape(2, 4, 9, 9, 8, 3, 3), tmp_path) is None


def test_a_time_budget_stops_the_search_after_the_first_measurement(tmp_path):
    shape = ConvShape(1, 4, 9, 9, 8, 3, 3)
    seen = []

    def objective(config):
        seen.append(config)
        return 1.0 + len(seen)

    best, ms = tune(shape, "emulated", objective, evaluations=5, folder=tmp_path, seconds=0)
    assert len(seen) == 1 and (best, ms) == (seen[0], 2.0)


def test_a_shipped_search_records_what_it_measured(tmp_path, monkeypatch):
    """--ship stores the same entry in the package's configurations as in this machine's: the
    configurations actually measured, not the number asked for."""
    from im2win.cuda import tuned

    monkeypatch.setattr(tuned, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setattr("im2win.cuda.autotune.SHIPPED", tmp_path / "shipped")
    shape = ConvShape(1, 4, 9, 9, 8, 3, 3)
    tune(shape, "emulated", lambda c: 1.0, evaluations=5, folder=tmp_path, seconds=0, ship=True)
    local = json.loads(tuned_path("emulated", tmp_path).read_text())
    shipped = json.loads(tuned_path("emulated", tmp_path / "shipped").read_text())
    assert local == shipped and next(iter(shipped.values()))["evaluations"] == 1


def test_a_candidate_that_fails_is_told_as_an_error_and_the_search_goes_on(
    tmp_path, monkeypatch, capsys
):
    """One configuration the GPU refuses at launch ends no search; one that leaves the GPU
    unusable does, naming both errors."""
    shape = ConvShape(1, 4, 9, 9, 8, 3, 3)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    seen = []

    def objective(config):
        seen.append(config)
        if len(seen) == 1:
            raise RuntimeError("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES")
        return float(len(seen))

    best, ms = tune(shape, "emulated", objective, evaluations=2, folder=tmp_path)
    assert len(seen) == 3 and (best, ms) == (seen[1], 2.0)
    assert "told as an error: RuntimeError: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES" in (
        capsys.readouterr().err
    )

    def lost():
        raise RuntimeError("an illegal memory access was encountered")

    monkeypatch.setattr(torch.cuda, "synchronize", lost)
    seen.clear()
    with pytest.raises(RuntimeError, match="OUT_OF_RESOURCES.*then RuntimeError: an illegal"):
        tune(shape, "emulated", objective, evaluations=2, folder=tmp_path / "b")


def test_a_search_keeps_the_configuration_in_use_where_nothing_beats_it(tmp_path):
    """The configuration the shape runs with today is measured beside the search; a search whose
    candidates are all slower leaves it stored (with its time now), a faster one replaces it."""
    from im2win.cuda.config import VARIANTS
    from im2win.cuda.tuned import store

    shape = ConvShape(1, 4, 9, 9, 8, 3, 3)
    in_use = VARIANTS["fit_k_no_double_buffer"]  # outside the search space (fit_k, one buffer)
    store("emulated", shape, in_use, 9.0, 1, tmp_path, source="fastest of the ablation")

    best, ms = tune(shape, "emulated", lambda c: 1.0 if c == in_use else 5.0, 4, folder=tmp_path)
    assert (best, ms) == (in_use, 1.0)
    entry = json.loads(tuned_path("emulated", tmp_path).read_text())[shape_key(shape)]
    assert entry["source"] == "kept: local" and entry["time_ms"] == 1.0

    best, ms = tune(shape, "emulated", lambda c: 2.0 if c == in_use else 0.5, 4, folder=tmp_path)
    assert best != in_use and ms == 0.5
    assert stored("emulated", shape, tmp_path)[1] == best
