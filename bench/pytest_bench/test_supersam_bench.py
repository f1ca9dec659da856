"""pytest-benchmark suite for SuperSAM: encoder time of extracted subnets by size (random weights),
and mIoU evaluation throughput. Run: `tox -e bench`. Not part of the test suite."""

import pytest
import torch

from supersam_min.build import build
from supersam_min.data import nuclei_split
from supersam_min.evaluate import evaluate
from supersam_min.supernet import SuperSAM, parameter_count


@pytest.mark.parametrize("subnet", ["max", "random", "min"])
@pytest.mark.parametrize("model", ["sam_tiny", "vit_b"])
def test_subnet_encoder(benchmark, model, subnet):
    torch.manual_seed(0)
    sup = SuperSAM(build(model), model)
    cfg = sup.space.named(subnet)
    sam = sup.get_active_subnet(cfg).eval()
    size = sam.image_encoder.img_size
    x = torch.randn(1, 3, size, size)
    benchmark.group = f"encoder {model}"
    benchmark.extra_info.update(
        model=model, subnet=subnet, parameters=parameter_count(sam), blocks=list(cfg.blocks)
    )
    with torch.no_grad():
        benchmark.pedantic(sam.image_encoder, args=(x,), warmup_rounds=1, rounds=5, iterations=1)


@pytest.mark.parametrize("prompt", ["box", "point"])
def test_evaluation_throughput(benchmark, prompt):
    torch.manual_seed(0)
    sup = SuperSAM(build("sam_tiny"), "sam_tiny")
    samples = nuclei_split("val")
    benchmark.group = "evaluation sam_tiny nuclei:val"
    result = benchmark.pedantic(
        evaluate, args=(sup, samples, prompt), warmup_rounds=1, rounds=5, iterations=1
    )
    benchmark.extra_info.update(
        prompt=prompt,
        objects=result["objects"],
        objects_per_second=result["objects"] / benchmark.stats.stats.median,
    )
