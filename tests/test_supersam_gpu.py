"""The SuperSAM commands on a real GPU, in fp32 and bf16 (skipped without one)."""

import pytest
import torch

from supersam_min import commands
from supersam_min.search import encoder_latency_ms

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_search_evaluate_on_cuda(tmp_path, precision):
    commands.pretrain(tmp_path / "pre", steps=2, images=2, device="cuda", progress=False)
    common = dict(device="cuda", precision=precision, progress=False)
    commands.train_supernet(
        tmp_path / "pre", tmp_path / "sup", steps=2, checkpoint_every=1, **common
    )
    found = commands.search(
        tmp_path / "sup",
        tmp_path / "s",
        method="random",
        evaluations=2,
        budget_kind="latency",
        budget=0.9,
        **common,
    )
    assert found["evaluations"] >= 1
    scores = commands.evaluate(tmp_path / "s" / "best", device="cuda", precision=precision)
    assert 0 <= scores["miou"] <= 1 and scores["precision"] == precision


def test_bf16_encoder_latency_is_measured_with_cuda_events():
    sup = load_model_tiny()
    assert encoder_latency_ms(sup.sam, 3, "bf16") > 0


def load_model_tiny():
    from supersam_min.build import build
    from supersam_min.supernet import SuperSAM

    return SuperSAM(build("sam_tiny"), "sam_tiny").to(torch.device("cuda", 0))
