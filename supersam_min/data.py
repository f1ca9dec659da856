"""Data for SuperSAM at CPU scale: the real nuclei image shipped in the `stardist` wheel, a folder
format for users' own data, a synthetic source distribution for pre-training, and SAM prompts.

A sample is (image [3, S, S] float in 0..255, masks [M, S, S] bool); Sam.preprocess normalises.
"""

from __future__ import annotations

import importlib.metadata
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MIN_MASK_PIXELS = 20  # smaller instances are dropped (the authors drop < 100 px at 1024 scale)
NUCLEI_CROP, NUCLEI_STRIDE = 128, 32  # px of the 512-px image; see nuclei_split
NUCLEI_REGIONS = {  # (y0, y1, x0, x1) of the 512 x 512 image; an instance belongs to one region
    "train": (0, 256, 0, 512),
    "val": (256, 512, 0, 256),
    "test": (256, 512, 256, 512),
}


class DataError(ValueError):
    """A dataset that cannot be used, with what is wrong and how to fix it."""


@dataclass
class Sample:
    image: torch.Tensor  # [3, H, W] float32, 0..255
    masks: torch.Tensor  # [M, H, W] bool, one per object


def _to_rgb(image: np.ndarray) -> torch.Tensor:
    """Grey or RGB image of any range -> [3, H, W] float32 scaled to 0..255 (1st-99.8th pct.)."""
    img = image.astype(np.float32)
    if img.ndim == 3 and img.shape[-1] in (3, 4):  # H W C (RGB, RGBA: alpha dropped)
        img = img[..., :3].transpose(2, 0, 1)
    elif img.ndim == 3 and img.shape[0] in (3, 4):  # C H W (some TIFF writers)
        img = img[:3]
    elif img.ndim == 3 and img.shape[-1] == 1:
        img = np.repeat(img[..., 0][None], 3, axis=0)
    elif img.ndim == 2:  # grey, 8 or 16 bit
        img = np.repeat(img[None], 3, axis=0)
    else:
        raise DataError(
            f"image of shape {image.shape}: expected H x W (grey) or H x W x 3/4 (RGB, RGBA)"
        )
    lo, hi = np.percentile(img, 1), np.percentile(img, 99.8)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255.0
    return torch.from_numpy(img)


def _instances(labels: np.ndarray, min_pixels: int = MIN_MASK_PIXELS) -> torch.Tensor:
    ids = [i for i in np.unique(labels) if i != 0]
    masks = [labels == i for i in ids]
    masks = [m for m in masks if m.sum() >= min_pixels]
    if not masks:
        return torch.zeros((0, *labels.shape), dtype=torch.bool)
    return torch.from_numpy(np.stack(masks))


def nuclei_image() -> tuple[np.ndarray, np.ndarray]:
    """The 2018 Data Science Bowl nuclei image (512 x 512, 125 labelled instances) and its labels,
    read from the installed `stardist` wheel (no download)."""
    import tifffile

    try:
        dist = importlib.metadata.distribution("stardist")
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError(
            "the default data ships in the `stardist` wheel: pip install stardist "
            "(see constraints.txt), or pass --data DIR with your own images"
        ) from exc
    folder = "stardist/data/images/"
    return (
        tifffile.imread(dist.locate_file(folder + "img2d.tif")),
        tifffile.imread(dist.locate_file(folder + "mask2d.tif")),
    )


def _owned_crops(labels: np.ndarray, ids: list[int], region, crop: int) -> list[tuple]:
    """Crops (y, x, ids) covering every object once: each not yet covered object gets a crop
    centred on it (clamped to the region), which owns every uncovered object wholly inside it."""
    y0, y1, x0, x1 = region
    covered: set[int] = set()
    out = []
    for i in ids:
        if i in covered:
            continue
        ys, xs = np.nonzero(labels == i)
        ty = min(max(int(ys.mean()) - crop // 2, y0), y1 - crop)
        tx = min(max(int(xs.mean()) - crop // 2, x0), x1 - crop)
        inside = _wholly_inside(labels, ty, tx, crop, [j for j in ids if j not in covered])
        covered |= inside
        out.append((ty, tx, inside))
    return out


def _wholly_inside(labels: np.ndarray, ty: int, tx: int, crop: int, ids) -> set[int]:
    window = labels[ty : ty + crop, tx : tx + crop]
    return {j for j in ids if (window == j).sum() == (labels == j).sum()}


def nuclei_split(split: str) -> list[Sample]:
    """One split of the nuclei image as NUCLEI_CROP px crops of the split's region, at 1x; SAM's
    geometry (supersam_min/geometry.py) upsamples each to the model's input (2x for the 256-px tiny
    SAM).

    Every object lies wholly inside one region, so none is shared by two splits (objects crossing a
    region border belong to none). train: crops on a NUCLEI_STRIDE grid, each with the objects
    wholly inside it as targets (an object appears in several crops: augmentation by position).
    val / test: each object is a target exactly once, in a crop centred on it, so mIoU is a mean
    over distinct objects.

    Why crops rather than the whole image: at the image's 1x scale a nucleus (~20 px) is about one
    16-px patch of the 256-px tiny SAM, far from SAM's regime (the authors resize their 256-px
    patches to SAM's 1024 px, 4x); fed at 1x, the tiny model barely learned even its training crops
    (box mIoU 0.50 -> 0.62 in 300 steps). A 128-px crop resized to 256 px puts it at 2x.
    """
    if split not in NUCLEI_REGIONS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(NUCLEI_REGIONS)}")
    image, labels = nuclei_image()
    region = y0, y1, x0, x1 = NUCLEI_REGIONS[split]
    inside_region = np.zeros(labels.shape, bool)
    inside_region[y0:y1, x0:x1] = True
    ids = [
        int(i)
        for i in np.unique(labels[inside_region])
        if i != 0
        and not ((labels == i) & ~inside_region).any()
        and (labels == i).sum() >= MIN_MASK_PIXELS
    ]
    crop = NUCLEI_CROP
    if split == "train":
        crops = [
            (ty, tx, _wholly_inside(labels, ty, tx, crop, ids))
            for ty in range(y0, y1 - crop + 1, NUCLEI_STRIDE)
            for tx in range(x0, x1 - crop + 1, NUCLEI_STRIDE)
        ]
    else:
        crops = _owned_crops(labels, ids, region, crop)
    samples = []
    for ty, tx, targets in crops:
        if not targets:
            continue
        window = labels[ty : ty + crop, tx : tx + crop]
        masks = torch.from_numpy(np.stack([window == j for j in sorted(targets)]))
        samples.append(Sample(_to_rgb(image[ty : ty + crop, tx : tx + crop]), masks))
    return samples


# PIL modes whose pixel values are not intensities: converted to RGB (images only; a mask's palette
# indices are its labels)
_TO_RGB_MODES = ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def _read(path: Path, mask: bool = False) -> np.ndarray:
    """The pixels of a PNG or TIFF file; DataError naming the file when it cannot be decoded."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        from PIL import Image

        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            if not mask and image.mode in _TO_RGB_MODES:
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            elif not mask and image.mode == "LA":
                image = image.convert("L")
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL.UnidentifiedImageError is an OSError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path} cannot be read as an image ({reason}); replace or remove it"
        ) from None


IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def folder_dataset(root: str | Path) -> list[Sample]:
    """A folder with images/ and masks/ (instance labels: 0 background, 1..n objects), PNG or TIFF,
    matched by file stem. Clear errors for missing folders, unpaired files, size mismatches and
    label images without objects."""
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"{d} does not exist: a dataset folder holds images/ and masks/")
    images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    unpaired = sorted(set(images) ^ set(masks))
    if unpaired:
        raise DataError(
            f"files without a partner in {root}: {unpaired[:5]} (images/X.png needs "
            "masks/X.png or .tif, and the other way round)"
        )
    if not images:
        raise DataError(f"no PNG or TIFF images in {img_dir}")
    samples = []
    for stem in images:
        img, lab = _read(images[stem]), _read(masks[stem], mask=True)
        if lab.ndim != 2:
            raise DataError(f"{masks[stem]}: an instance-label mask must be one channel")
        try:
            rgb = _to_rgb(img)
        except DataError as exc:
            raise DataError(f"{images[stem]}: {exc}") from None
        if tuple(rgb.shape[1:]) != lab.shape:
            raise DataError(
                f"{images[stem]} is {rgb.shape[1]}x{rgb.shape[2]} but its mask {masks[stem]} is "
                f"{lab.shape[0]}x{lab.shape[1]}: a mask labels the image's own pixels"
            )
        inst = _instances(lab)
        if len(inst) == 0:
            raise DataError(f"{masks[stem]} has no object of at least {MIN_MASK_PIXELS} pixels")
        samples.append(Sample(rgb, inst))
    return samples


def synthetic_blobs(n: int, size: int = 256, seed: int = 0) -> list[Sample]:
    """The source distribution for pre-training the tiny SAM: bright ellipses of random size,
    orientation and intensity on a smooth noisy background (not microscopy: a domain shift)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(n):
        labels = np.zeros((size, size), np.int32)
        img = rng.normal(40, 12, (size, size)).astype(np.float32)
        for k in range(1, int(rng.integers(4, 12)) + 1):
            cy, cx = rng.uniform(12, size - 12, 2)
            a, b = rng.uniform(6, 24, 2)
            t = rng.uniform(0, np.pi)
            u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
            v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
            inside = (u * u + v * v <= 1) & (labels == 0)
            labels[inside] = k
            img[inside] += rng.uniform(60, 200)
        out.append(Sample(_to_rgb(img), _instances(labels)))
    return out


def point_prompt(mask: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """One random positive point [x, y] inside `mask` [H, W]."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    i = rng.randrange(len(ys))
    return torch.tensor([float(xs[i]), float(ys[i])])


def box_prompt(mask: torch.Tensor, rng: random.Random, jitter: int | None = None) -> torch.Tensor:
    """The mask's bounding box [x0, y0, x1, y1] with 0..jitter px of random noise per side, clipped
    to the image. Default jitter: the authors' 20 px at SAM's 1024 px, scaled to this image size."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    h, w = mask.shape
    if jitter is None:
        jitter = round(20 * max(h, w) / 1024)
    box = [
        xs.min() - rng.randint(0, jitter),
        ys.min() - rng.randint(0, jitter),
        xs.max() + rng.randint(0, jitter),
        ys.max() + rng.randint(0, jitter),
    ]
    return torch.tensor(
        [
            max(0, int(box[0])),
            max(0, int(box[1])),
            min(w - 1, int(box[2])),
            min(h - 1, int(box[3])),
        ],
        dtype=torch.float32,
    )


def augment(sample: Sample, rng: random.Random) -> Sample:
    """Random flips and quarter turns (the same for image and masks)."""
    k = rng.randrange(4)
    img, masks = torch.rot90(sample.image, k, (1, 2)), torch.rot90(sample.masks, k, (1, 2))
    if rng.random() < 0.5:
        img, masks = img.flip(2), masks.flip(2)
    return Sample(img.contiguous(), masks.contiguous())


SPLITS = ("train", "val", "test")


def load_spec(spec: str, split: str) -> list[Sample]:
    """Samples named by a data option: `nuclei` (the stardist image's `split`), `nuclei:SPLIT`, or a
    dataset folder (see folder_dataset)."""
    name, _, explicit = spec.partition(":")
    if name == "nuclei":
        chosen = explicit or split
        if chosen not in SPLITS:
            raise DataError(f"unknown nuclei split {chosen!r}; choose one of {', '.join(SPLITS)}")
        return nuclei_split(chosen)
    return folder_dataset(spec)


def split_specs(data: str | None) -> dict[str, str]:
    """The train/val/test data options of a pipeline: the nuclei splits (data None), or a folder
    holding train/, val/ and test/ dataset folders."""
    if data is None:
        return {s: f"nuclei:{s}" for s in SPLITS}
    root = Path(data)
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"--data {root}: no {', '.join(missing)} folder(s); expected train/ val/ test/"
        )
    return {s: str(root / s) for s in SPLITS}
