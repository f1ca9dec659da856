"""Sandwich-rule training, exact resume, data splits and evaluation on the tiny SAM."""

import random

import pytest
import torch

from supersam_min.build import build
from supersam_min.data import (
    DataError,
    folder_dataset,
    nuclei_split,
    synthetic_blobs,
)
from supersam_min.evaluate import evaluate, evaluate_prompts
from supersam_min.supernet import SuperSAM
from supersam_min.train import TrainConfig, sandwich_step, train


def _supernet():
    torch.manual_seed(0)
    return SuperSAM(build("sam_tiny"), "sam_tiny")


def test_nuclei_splits_are_disjoint_real_data():
    splits = {s: nuclei_split(s) for s in ("train", "val", "test")}
    counts = {s: sum(len(x.masks) for x in v) for s, v in splits.items()}
    assert counts["train"] > 40 and counts["val"] > 20 and counts["test"] > 10
    assert all(x.image.shape == (3, 128, 128) for v in splits.values() for x in v)  # crops at 1x
    # val and test: every labelled object wholly inside the region is a target exactly once
    import numpy as np

    from supersam_min.data import MIN_MASK_PIXELS, NUCLEI_REGIONS, nuclei_image

    _, labels = nuclei_image()
    for split in ("val", "test"):
        y0, y1, x0, x1 = NUCLEI_REGIONS[split]
        region = labels[y0:y1, x0:x1]
        whole = [
            i
            for i in np.unique(region)
            if i and (region == i).sum() == (labels == i).sum() >= MIN_MASK_PIXELS
        ]
        assert counts[split] == len(whole)


def test_resumed_run_continues_exactly(tmp_path):
    data = synthetic_blobs(3, seed=1)
    cfg = dict(steps=4, batch_size=1, max_masks=3, checkpoint_every=2, seed=5, warmup_steps=1)
    straight = _supernet()
    train(straight, data, TrainConfig(**cfg), tmp_path / "a", progress=False)
    interrupted = _supernet()
    train(interrupted, data, TrainConfig(**cfg), tmp_path / "b", progress=False, stop_after=2)
    resumed = _supernet()  # a fresh process would start from new weights too
    result = train(resumed, data, TrainConfig(**cfg), tmp_path / "b", resume=True, progress=False)
    assert len(result.history) == 4
    for (name, a), b in zip(
        straight.sam.state_dict().items(), resumed.sam.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_sandwich_step_trains_encoder_and_decoder_not_prompt_encoder():
    sup = _supernet()
    from supersam_min.train import make_batch, trainable_parameters

    params = trainable_parameters(sup)
    opt = torch.optim.AdamW(params, lr=1e-3)
    before = {n: p.clone() for n, p in sup.sam.named_parameters()}
    rng = random.Random(0)
    batch = make_batch(synthetic_blobs(2), TrainConfig(batch_size=1, max_masks=2), rng)
    losses = sandwich_step(sup, batch, opt, rng, n_random=2, distill=True)
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    after = dict(sup.sam.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("prompt_encoder."))
    assert not torch.equal(
        before["image_encoder.blocks.0.mlp.lin1.weight"],
        after["image_encoder.blocks.0.mlp.lin1.weight"],
    )
    assert not torch.equal(
        before["mask_decoder.iou_prediction_head.layers.0.weight"],
        after["mask_decoder.iou_prediction_head.layers.0.weight"],
    )


def test_evaluate_reports_miou_and_objects():
    sup = _supernet()
    data = synthetic_blobs(2, seed=3)
    for prompt in ("point", "box"):
        out = evaluate(sup, data, prompt)
        assert out["objects"] == sum(len(s.masks) for s in data)
        assert 0.0 <= out["miou"] <= 1.0


def test_point_and_box_from_one_encoding_score_as_each_alone(monkeypatch):
    """evaluate_prompts encodes each image once for both prompt kinds (a search's default
    objective), and gives each kind exactly the score evaluate gives it alone."""
    sup = _supernet()
    data = nuclei_split("val")[:6]
    alone = {kind: evaluate(sup, data, kind, seed=2) for kind in ("box", "point")}
    encoded = []
    encode = sup.encode
    monkeypatch.setattr(sup, "encode", lambda x: encoded.append(x.shape) or encode(x))
    assert evaluate_prompts(sup, data, ("box", "point"), seed=2) == alone
    assert len(encoded) == len(data)
    assert alone["box"]["miou"] != alone["point"]["miou"]  # two scores, not one twice
    with pytest.raises(ValueError, match="unknown prompt 'mask'"):
        evaluate_prompts(sup, data, ("box", "mask"))


def test_folder_dataset_errors(tmp_path):
    import numpy as np
    from PIL import Image

    with pytest.raises(DataError, match="images/ and masks/"):
        folder_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DataError, match="without a partner"):
        folder_dataset(tmp_path)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match="is 32x32 but its mask .* is 16x16"):
        folder_dataset(tmp_path)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match="no object"):
        folder_dataset(tmp_path)
    labels = np.zeros((32, 32), np.uint8)
    labels[4:12, 4:12] = 1
    labels[20:30, 18:28] = 2
    Image.fromarray(labels).save(tmp_path / "masks" / "a.png")
    (sample,) = folder_dataset(tmp_path)
    assert sample.masks.shape == (2, 32, 32)


def test_torchrun_two_cpu_processes_keep_replicas_identical(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(worker), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "checkpoint.pt").is_file()
