"""pytest-benchmark suite: each implementation on each paper layer (batch 1), side by side.

Run: `tox -e bench` (saves JSON under .benchmarks/), or
`pytest bench/pytest_bench --benchmark-json=bench.json`. Not part of the test suite.
"""

import pytest
import torch

import im2win
from im2win.metrics import gflops
from im2win.shapes import PAPER_LAYERS


@pytest.mark.parametrize("impl", list(im2win.IMPLEMENTATIONS))
@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_conv2d(benchmark, layer, impl):
    shape = PAPER_LAYERS[layer].with_batch(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape.input_shape(), generator=gen)
    w = torch.randn(shape.weight_shape(), generator=gen)
    x, w = im2win.IMPLEMENTATIONS[impl].arguments(x, w)  # as its callers hold them
    benchmark.group = layer
    benchmark.extra_info.update(
        layer=layer, impl=impl, flops=shape.flops, threads=torch.get_num_threads()
    )
    benchmark.pedantic(
        im2win.conv2d,
        args=(x, w, None, shape.stride, shape.padding),
        kwargs={"impl": impl},
        warmup_rounds=1,
        rounds=5,
        iterations=1,
    )
    benchmark.extra_info["gflops"] = gflops(shape, benchmark.stats.stats.median * 1e3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("impl", ["im2win", "im2col_gemm", "torch"])
@pytest.mark.parametrize("layer", list(PAPER_LAYERS))
def test_conv2d_gpu(benchmark, layer, impl):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    shape = PAPER_LAYERS[layer].with_batch(8)
    x = torch.randn(shape.input_shape(), device="cuda")
    w = torch.randn(shape.weight_shape(), device="cuda")

    def call():
        im2win.conv2d(x, w, None, shape.stride, shape.padding, impl=impl)
        torch.cuda.synchronize()

    benchmark.group = f"{layer}-gpu"
    benchmark.pedantic(call, warmup_rounds=3, rounds=10, iterations=1)
    benchmark.extra_info.update(
        layer=layer, impl=impl, tflops=shape.flops / benchmark.stats.stats.min / 1e12
    )
