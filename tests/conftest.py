import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none is visible to torch here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def narrower_level() -> str:
    """An x86 level narrower than this CPU's widest that PyTorch can be held to
    (im2win.cpu.levels.hold_torch): AVX2 on an AVX-512 host; skips where there is none."""
    from im2win.cpu import levels

    here = [name for name in levels.LEVELS if levels.runs_here(name)]
    below = [name for name in here[:-1] if levels.LEVELS[name].onednn]
    if not below:
        pytest.skip("no x86 level narrower than this CPU's that PyTorch can be held to")
    return below[-1]


@pytest.fixture
def fake_gpu(monkeypatch):
    """`torch.cuda` pretending one GPU exists, without one: `set_device` checks its argument the way
    the real one does (an index, an int, or a torch.device with an index) and records it.

    Catches device-handling crashes on machines without a GPU; nothing can run on the fake GPU.
    """
    from torch.cuda._utils import _get_device_index

    state = {"current": 0, "set": []}

    def set_device(device):
        index = _get_device_index(device)  # raises on torch.device("cuda"), as the real one does
        state["set"].append(index)
        state["current"] = index

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    return state
