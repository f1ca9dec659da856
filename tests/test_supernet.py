"""SuperSAM supernet invariants on the tiny SAM (and one reduced-cost ViT-B check)."""

import json
import random

import pytest
import torch

from supersam_min.build import CheckpointError, build
from supersam_min.checkpoint import load_into
from supersam_min.importance import reorder_mlps, wanda_scores
from supersam_min.storage import load_subnet, save_subnet
from supersam_min.supernet import (
    SubnetConfig,
    SuperSAM,
    parameter_count,
    predicted_parameters,
    vit_b_search_space,
)


def _tiny():
    torch.manual_seed(0)
    sam = build("sam_tiny")
    for p in sam.parameters():  # non-trivial weights, so a wrong slice changes the output
        p.data.add_(0.05 * torch.randn_like(p))
    return sam


def _images(n=2, size=256):
    return torch.randn(n, 3, size, size)


@torch.no_grad()
def test_largest_subnet_is_the_original_sam():
    sam = _tiny()
    x = _images()
    reference = sam.image_encoder(x)
    sup = SuperSAM(sam, "sam_tiny")
    sup.sample_max_subnet()
    assert torch.equal(sup.encode(x), reference)
    assert torch.equal(sam.image_encoder(x), reference)  # ElasticMLP at full width is a no-op


@torch.no_grad()
def test_largest_subnet_vit_b_reduced_cost():
    torch.manual_seed(0)
    sam = build("vit_b", img_size=256)  # real ViT-B blocks, 16 x 16 tokens instead of 64 x 64
    x = _images(1)
    reference = sam.image_encoder(x)
    sup = SuperSAM(sam, "vit_b")
    assert sup.space == vit_b_search_space()
    sup.sample_max_subnet()
    assert torch.equal(sup.encode(x), reference)


@torch.no_grad()
def test_wanda_reordering_keeps_the_full_model():
    sam = _tiny()
    x = _images()
    before = sam.image_encoder(x)
    calibration = [_images(1)]
    scores = wanda_scores(sam, calibration)
    perms = reorder_mlps(sam, scores)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms)
    torch.testing.assert_close(sam.image_encoder(x), before, rtol=1e-5, atol=1e-5)
    for old, new, perm in zip(scores, wanda_scores(sam, calibration), perms, strict=True):
        torch.testing.assert_close(new, old[perm], rtol=1e-4, atol=1e-6)  # units moved with scores
        assert torch.all(new[:-1] >= new[1:] - 1e-4 * new.max())  # most important first


@torch.no_grad()
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extracted_subnet_computes_what_the_supernet_computes(seed):
    sup = SuperSAM(_tiny(), "sam_tiny")
    cfg = sup.sample_active_subnet(random.Random(seed))
    x = _images()
    sub = sup.get_active_subnet()
    assert len(sub.image_encoder.blocks) == len(cfg.blocks)
    torch.testing.assert_close(sub.image_encoder(x), sup.encode(x), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_min_subnet_is_smaller_and_predicted_exactly():
    sup = SuperSAM(_tiny(), "sam_tiny")
    for cfg in (
        sup.sample_min_subnet(),
        sup.sample_max_subnet(),
        sup.sample_active_subnet(random.Random(7)),
    ):
        sub = sup.get_active_subnet(cfg)
        assert predicted_parameters(sup.sam, cfg) == parameter_count(sub)
    assert parameter_count(sup.get_active_subnet(sup.space.min_subnet())) < parameter_count(sup.sam)


def test_vit_b_smallest_subnet_size_matches_the_paper():
    space = vit_b_search_space()
    sam = build("vit_b")
    assert space.widths == (768, 1020, 1536, 2304)
    n = predicted_parameters(sam, space.min_subnet())
    assert abs(n / 1e6 - 37.0) < 0.5  # facts: about 37.0 M, ~39.5% of ViT-B


@torch.no_grad()
def test_save_and_load_a_subnet_without_the_supernet(tmp_path):
    sup = SuperSAM(_tiny(), "sam_tiny")
    cfg = sup.sample_active_subnet(random.Random(3))
    sub = save_subnet(sup, tmp_path / "sub")
    arch = json.loads((tmp_path / "sub.json").read_text())
    assert arch["subnet"] == json.loads(cfg.to_json())
    loaded, name = load_subnet(tmp_path / "sub")
    assert name == "sam_tiny"
    x = _images(1)
    assert torch.equal(loaded.image_encoder(x), sub.image_encoder(x))


def test_subnet_config_json_and_bad_input():
    cfg = SubnetConfig((0, 2, 3), (384, 96, 128))
    assert SubnetConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown subnet configuration key"):
        SubnetConfig.from_json('{"blocks": [0], "mlp_widths": [1], "heads": [2]}')
    with pytest.raises(ValueError, match="ascending"):
        SubnetConfig((2, 0), (1, 1))
    sup = SuperSAM(_tiny(), "sam_tiny")
    with pytest.raises(ValueError, match="out of range"):
        sup.set_active_subnet(SubnetConfig(tuple(range(6)), (384, 384, 384, 384, 384, 5000)))
    with pytest.raises(ValueError, match="not removable"):
        sup.set_active_subnet(SubnetConfig((1, 2, 3, 4, 5), (384,) * 5))


def test_wrong_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(build("sam_tiny").state_dict(), path)
    with pytest.raises(CheckpointError, match="missing key"):
        load_into(build("sam_tiny", depth=4, global_attn_indexes=(1, 3)), path)
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="unexpected key"):
        load_into(build("sam_tiny"), tmp_path / "other.pt")


def test_layer_importance_gives_documented_probabilities():
    from supersam_min.data import synthetic_blobs
    from supersam_min.importance import P_MAX, P_MIN, layer_importance

    sup = SuperSAM(_tiny(), "sam_tiny")
    deltas, space = layer_importance(sup, synthetic_blobs(2, seed=4), max_masks=4)
    assert len(deltas) == len(space.removable) == len(space.removal_prob)
    assert all(P_MIN - 1e-9 <= p <= P_MAX + 1e-9 for p in space.removal_prob)
    worst = max(range(len(deltas)), key=deltas.__getitem__)
    if deltas[worst] > 0:
        assert space.removal_prob[worst] == pytest.approx(P_MIN)
    assert sup.active == sup.space.max_subnet()


@torch.no_grad()
def test_an_elastic_mlp_narrows_to_its_stock_self():
    from segment_anything.modeling.common import MLPBlock

    sup = SuperSAM(_tiny(), "sam_tiny")
    elastic = sup.sam.image_encoder.blocks[1].mlp
    elastic.active = 96
    stock = elastic.narrowed()
    assert type(stock) is MLPBlock and stock.lin1.out_features == 96
    x = torch.randn(2, 5, elastic.lin1.in_features)
    assert torch.equal(stock(x), elastic(x))
