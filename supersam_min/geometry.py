"""SAM's own geometry, for training, validation, search and evaluation alike (segment_anything's
SamPredictor does the same): the longest image side is resized to the model's input size
(segment_anything.utils.transforms.ResizeLongestSide), points and boxes are transformed with the
same object, the image is normalised and zero-padded to a square (Sam.preprocess), and the
low-resolution mask logits are mapped back to the original image (Sam.postprocess_masks), where IoU
is computed.

Images are resized with ResizeLongestSide's own target size and interpolation (bilinear,
antialiased), but not through its apply_image_torch, which takes the target size from the batch and
channel dimensions (facebookresearch/segment-anything#218).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide


@dataclass(frozen=True)
class Framed:
    """One image as the model sees it: the normalised, padded input and the two sizes that map
    results back (input_size: the resized image inside the padding; original_size: the image's)."""

    input: torch.Tensor  # [1, 3, S, S]
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def transform_of(sam: Sam) -> ResizeLongestSide:
    return ResizeLongestSide(sam.image_encoder.img_size)


def frame(sam: Sam, image: torch.Tensor) -> Framed:
    """An image [3, H, W] (0..255, any size and aspect) as the model's input [1, 3, S, S]."""
    h, w = image.shape[-2:]
    size = ResizeLongestSide.get_preprocess_shape(h, w, sam.image_encoder.img_size)
    x = image[None].to(sam.device, torch.float32)
    if (h, w) != size:
        x = F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=True)
    return Framed(sam.preprocess(x), size, (h, w))


def transform_prompts(sam: Sam, prompts: dict, original_size: tuple[int, int]) -> dict:
    """Prompts in original image coordinates ({"points": (coords [M, 1, 2], labels [M, 1])} or
    {"boxes": [M, 4]}) in the model input's coordinates."""
    t = transform_of(sam)
    out = dict(prompts)
    if "points" in prompts:
        coords, labels = prompts["points"]
        out["points"] = (t.apply_coords_torch(coords, original_size), labels)
    if "boxes" in prompts:
        out["boxes"] = t.apply_boxes_torch(prompts["boxes"], original_size)
    return out


def to_original(sam: Sam, logits: torch.Tensor, framed: Framed) -> torch.Tensor:
    """Low-resolution mask logits [M, C, L, L] -> logits at the original image size [M, C, H, W]."""
    return sam.postprocess_masks(logits, framed.input_size, framed.original_size)


def low_res_targets(masks: torch.Tensor, framed: Framed, size: int) -> torch.Tensor:
    """Ground-truth masks [M, H, W] (original image) in the frame of the low-resolution logits
    [M, size, size]: resized like the image, padded like it, area-resampled, thresholded at 0.5."""
    img_size = framed.input.shape[-1]
    m = masks[:, None].float()
    if tuple(m.shape[-2:]) != framed.input_size:
        m = F.interpolate(m, framed.input_size, mode="bilinear", align_corners=False)
    m = F.pad(m, (0, img_size - framed.input_size[1], 0, img_size - framed.input_size[0]))
    return (F.interpolate(m, size=(size, size), mode="area")[:, 0] > 0.5).float()
