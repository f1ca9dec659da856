"""pytest-benchmark suite: torchvision networks as a user runs them with each peer, side by side.

Random weights, eval, batch 1, 224 x 224, under torch.inference_mode(), each form of
im2win.nn.NETWORK_FORMS (im2win.nn.prepare): PyTorch's NCHW path (torch), a channels_last network
(torch_cl_net), that network compiled with its weights frozen (torch_compiled), and every
convolution im2win can run swapped for im2win's, keeping no packed weights (im2win_unpacked) and
as im2win.nn.convert leaves them (im2win). Run: `pytest bench/pytest_bench -k network`.
"""

import pytest
import torch

from im2win.nn import NETWORK_FORMS, prepare


@pytest.mark.parametrize("impl", NETWORK_FORMS)
@pytest.mark.parametrize("network", ["resnet18", "alexnet", "vgg11"])
def test_network(benchmark, network, impl):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = getattr(torchvision.models, network)(weights=None).eval()
    model, x = prepare(model, torch.randn(1, 3, 224, 224), impl)

    def forward():
        with torch.inference_mode():
            model(x)

    benchmark.group = f"network-{network}"
    benchmark.extra_info.update(network=network, impl=impl, threads=torch.get_num_threads())
    benchmark.pedantic(forward, warmup_rounds=2, rounds=15, iterations=1)
