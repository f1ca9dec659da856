"""asv suite: every CPU convolution implementation on the im2win papers' twelve layers (batch 1).

time_conv (seconds), peakmem_conv (process peak memory), track_gflops (GFLOP/s from the suite's own
median timing, so throughput is tracked across commits). Run through tox: `tox -e bench`.
"""

import functools

import torch

import im2win
from harness.timing import measure, measure_cuda
from im2win.metrics import gflops
from im2win.nn import NETWORK_FORMS
from im2win.shapes import PAPER_LAYERS

BATCH = 1


@functools.cache
def _inputs(layer: str):
    shape = PAPER_LAYERS[layer].with_batch(BATCH)
    gen = torch.Generator().manual_seed(0)
    return (
        shape,
        torch.randn(shape.input_shape(), generator=gen),
        torch.randn(shape.weight_shape(), generator=gen),
    )


class Conv2d:
    params = (list(PAPER_LAYERS), list(im2win.IMPLEMENTATIONS))
    param_names = ("layer", "impl")
    timeout = 300

    def setup(self, layer, impl):
        self.shape, x, w = _inputs(layer)
        x, w = im2win.IMPLEMENTATIONS[impl].arguments(x, w)  # as its callers hold them
        self.call = functools.partial(
            im2win.conv2d, x, w, None, self.shape.stride, self.shape.padding, impl=impl
        )
        self.call()  # builds the native library and warms up outside the timing

    def time_conv(self, layer, impl):
        self.call()

    def peakmem_conv(self, layer, impl):
        self.call()

    def track_gflops(self, layer, impl):
        return gflops(self.shape, measure(self.call, warmup=1, repeat=5).time_ms)

    track_gflops.unit = "GFLOP/s"


class Conv2dGpu:
    """The same layers on a CUDA GPU (batch 8, FP32, TF32 off); skipped without a GPU."""

    params = (list(PAPER_LAYERS), ["im2win", "im2col_gemm", "torch"])
    param_names = ("layer", "impl")
    timeout = 300

    def setup(self, layer, impl):
        if not torch.cuda.is_available():
            raise NotImplementedError("no CUDA GPU")  # asv's way to skip a combination
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        shape, x, w = _inputs(layer)
        self.shape = shape.with_batch(8)
        x = x.expand(8, -1, -1, -1).contiguous().cuda()
        self.call = functools.partial(
            im2win.conv2d, x, w.cuda(), None, shape.stride, shape.padding, impl=impl
        )
        self.call()
        torch.cuda.synchronize()

    def time_conv(self, layer, impl):
        self.call()
        torch.cuda.synchronize()

    def track_tflops(self, layer, impl):
        return self.shape.flops / (measure_cuda(self.call).min_ms * 1e-3) / 1e12

    track_tflops.unit = "TFLOPS"


class Network:
    """torchvision networks (random weights, eval, batch 1, 224 x 224) as a user runs them in each
    form of im2win.nn.NETWORK_FORMS (im2win.nn.prepare): PyTorch's NCHW path, a channels_last
    network, that network compiled with its weights frozen, and every convolution im2win can run
    swapped for im2win's, without and with its weights kept packed. What the user feels: the
    layers after each other, with the batch norms, ReLUs and pooling between them."""

    params = (["resnet18", "alexnet"], list(NETWORK_FORMS))
    param_names = ("network", "impl")
    timeout = 300

    def setup(self, network, impl):
        import torchvision

        from im2win.nn import prepare

        torch.manual_seed(0)
        model = getattr(torchvision.models, network)(weights=None).eval()
        self.model, self.x = prepare(model, torch.randn(BATCH, 3, 224, 224), impl)
        self.time_forward(network, impl)  # warm up outside the timing

    def time_forward(self, network, impl):
        with torch.inference_mode():
            self.model(self.x)
