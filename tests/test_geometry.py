"""SAM's geometry end to end (resize the longest side, transform prompts, pad, map masks back) and
folder datasets of any size, aspect and image mode."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from supersam_min import commands
from supersam_min import evaluate as evaluation
from supersam_min.build import build
from supersam_min.data import DataError, Sample, folder_dataset
from supersam_min.evaluate import evaluate
from supersam_min.geometry import frame, low_res_targets, to_original, transform_prompts
from supersam_min.supernet import SuperSAM


def _tiny() -> SuperSAM:
    torch.manual_seed(0)
    return SuperSAM(build("sam_tiny"), "sam_tiny")


def _rectangles(h: int, w: int, seed: int = 0) -> Sample:
    """An image with three bright rectangles (one object each) on a dark background."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 30.0, np.float32)
    masks = []
    for _ in range(3):
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        dy, dx = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w // 2))
        m = np.zeros((h, w), bool)
        m[y : y + dy, x : x + dx] = True
        img[m] = 200.0
        masks.append(m)
    image = torch.from_numpy(np.repeat(img[None], 3, 0))
    return Sample(image, torch.from_numpy(np.stack(masks)))


def _zoom(s: Sample, factor: int) -> Sample:
    image = F.interpolate(s.image[None], scale_factor=factor, mode="nearest")[0]
    masks = F.interpolate(s.masks[:, None].float(), scale_factor=factor, mode="nearest")[:, 0]
    return Sample(image, masks > 0.5)


def _box_oracle(monkeypatch):
    """A mask decoder that answers a box prompt with exactly that box (in the low-res frame of its
    input coordinates): whatever the model, the score then measures the geometry alone."""

    def decode(sup, embedding, prompts, multimask):
        low = embedding.shape[-1] * 4  # the decoder's low-res masks: 4x the embedding grid
        scale = low / sup.sam.image_encoder.img_size
        boxes = prompts["boxes"] * scale
        ys, xs = torch.meshgrid(torch.arange(low) + 0.5, torch.arange(low) + 0.5, indexing="ij")
        inside = (
            (xs >= boxes[:, 0, None, None])
            & (xs <= boxes[:, 2, None, None] + scale)
            & (ys >= boxes[:, 1, None, None])
            & (ys <= boxes[:, 3, None, None] + scale)
        )
        logits = torch.where(inside, 10.0, -10.0)[:, None]
        return logits, torch.ones(len(boxes), 1)

    monkeypatch.setattr(evaluation, "decode", decode)


@pytest.mark.parametrize("size", [(128, 128), (200, 120), (96, 250), (512, 512)])
def test_scores_are_computed_in_the_original_image_whatever_its_size(monkeypatch, size):
    """A 512-px image on the 256-px model scored 0.0007 when it was padded (cropped) instead of
    resized; with SAM's geometry every size and aspect scores what the geometry allows."""
    _box_oracle(monkeypatch)
    score = evaluate(_tiny(), [_rectangles(*size)], "box")["miou"]
    assert score > 0.9, score  # the oracle rasterises boxes on a 64-px grid: edges cost a little


@pytest.mark.parametrize("factor", [2, 4])
def test_an_image_at_2x_or_4x_scores_as_at_1x(monkeypatch, factor):
    _box_oracle(monkeypatch)
    sup = _tiny()
    small = [_rectangles(100, 140, seed=s) for s in range(3)]
    one = evaluate(sup, small, "box")["miou"]
    big = evaluate(sup, [_zoom(s, factor) for s in small], "box")["miou"]
    assert abs(one - big) <= 0.02, (one, big)


def test_frame_resizes_the_longest_side_and_pads():
    sam = _tiny().sam
    framed = frame(sam, torch.rand(3, 100, 400) * 255)
    assert framed.input.shape == (1, 3, 256, 256)
    assert framed.input_size == (64, 256) and framed.original_size == (100, 400)
    assert torch.all(framed.input[0, :, 64:] == 0)  # the padding
    boxes = transform_prompts(sam, {"boxes": torch.tensor([[0.0, 0.0, 400.0, 100.0]])}, (100, 400))
    assert torch.allclose(boxes["boxes"], torch.tensor([[0.0, 0.0, 256.0, 64.0]]))
    logits = torch.zeros(2, 3, 64, 64)
    assert to_original(sam, logits, framed).shape == (2, 3, 100, 400)


def test_low_res_targets_follow_the_image():
    sam = _tiny().sam
    s = _rectangles(100, 400)
    framed = frame(sam, s.image)
    target = low_res_targets(s.masks, framed, 64)
    assert target.shape == (3, 64, 64) and target[:, 16:].sum() == 0  # nothing in the padding
    back = to_original(sam, (target[:, None] * 20 - 10), framed)[:, 0] > 0
    inter = (back & s.masks).flatten(1).sum(1).float()
    union = (back | s.masks).flatten(1).sum(1).float()
    assert torch.all(inter / union > 0.8)


# -- folder datasets -----------------------------------------------------------------------------


def _labels(h, w):
    lab = np.zeros((h, w), np.uint16)
    lab[h // 4 : h // 2, w // 4 : w // 2] = 1
    lab[h // 2 : h * 3 // 4, w // 2 : w * 7 // 8] = 2
    return lab


def _write(folder, stem, image, labels):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    if isinstance(image, Image.Image):
        image.save(folder / "images" / f"{stem}.png")
    else:
        import tifffile

        tifffile.imwrite(folder / "images" / f"{stem}.tif", image)
    Image.fromarray(labels).save(folder / "masks" / f"{stem}.png")


def _mixed_folder(root, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"rgb": (120, 90), "rgba": (64, 160), "grey16": (100, 100), "palette": (80, 140)}
    for stem, (h, w) in shapes.items():
        lab = _labels(h, w)
        base = (rng.random((h, w)) * 60 + (lab > 0) * 150).astype(np.uint8)
        image = {
            "rgb": Image.fromarray(np.stack([base] * 3, -1)),
            "rgba": Image.fromarray(np.stack([base] * 3 + [np.full_like(base, 255)], -1)),
            "grey16": Image.fromarray(base.astype(np.uint16) * 257),
            "palette": Image.fromarray(np.stack([base] * 3, -1)).convert("P"),
        }[stem]
        _write(root, stem, image, lab)
    _write(
        root, "tiff_chw", np.stack([_labels(72, 96).astype(np.float32) * 100] * 3), _labels(72, 96)
    )
    return root


def test_folders_of_any_size_aspect_and_mode(tmp_path):
    samples = folder_dataset(_mixed_folder(tmp_path))
    assert len(samples) == 5
    for s in samples:
        assert s.image.shape[0] == 3 and s.image.shape[1:] == s.masks.shape[1:]
        assert len(s.masks) == 2 and 0 <= float(s.image.min()) <= float(s.image.max()) <= 255


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_image_is_one_line_naming_the_file(tmp_path, damage):
    _mixed_folder(tmp_path)
    path = tmp_path / "images" / "rgb.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a png at all")
    with pytest.raises(DataError, match="rgb.png cannot be read as an image"):
        folder_dataset(tmp_path)


def test_train_evaluate_and_search_on_mixed_size_images(tmp_path):
    for split in ("train", "val"):
        _mixed_folder(tmp_path / "data" / split, seed=len(split))
    pre = tmp_path / "pre"
    commands.pretrain(pre, steps=1, images=2, device="cpu", progress=False)
    sup_dir = tmp_path / "sup"
    result = commands.train_supernet(
        pre,
        sup_dir,
        data=str(tmp_path / "data" / "train"),
        val=str(tmp_path / "data" / "val"),
        steps=2,
        checkpoint_every=1,
        batch_size=3,
        device="cpu",
        progress=False,
    )
    assert result["steps"] == 2
    scores = commands.evaluate(sup_dir, data=str(tmp_path / "data" / "val"), device="cpu")
    assert scores["objects"] == 10
    found = commands.search(
        sup_dir,
        tmp_path / "search",
        data=str(tmp_path / "data" / "val"),
        method="random",
        evaluations=2,
        device="cpu",
        progress=False,
    )
    assert found["evaluations"] == 2
    assert json.loads((tmp_path / "search" / "best.json").read_text())["model"] == "sam_tiny"
