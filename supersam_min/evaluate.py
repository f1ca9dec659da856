"""Evaluation: mIoU with point prompts (best of SAM's three masks, by IoU with the ground truth, as
the authors' metric) or box prompts (single mask).

Per object: sigmoid(logit) > 0.5 at the image's original resolution (SAM's geometry:
supersam_min/geometry.py), IoU with its ground-truth mask; mIoU = mean over all objects. Boxes are
the exact bounding boxes; points are drawn from a fixed seed, so scores are reproducible.
"""

from __future__ import annotations

import random

import torch

from harness.device import autocast
from supersam_min.data import Sample
from supersam_min.supernet import SuperSAM
from supersam_min.train import predict, prompts_for


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU per mask: pred, target [M, H, W] bool -> [M]."""
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@torch.no_grad()
def evaluate(
    sup: SuperSAM, samples: list[Sample], prompt: str, seed: int = 0, precision: str = "fp32"
) -> dict:
    """{"miou", "objects"} of the active subnet on `samples` with `prompt` = point | box
    (precision bf16: the forward pass under bf16 autocast, on CUDA)."""
    if prompt not in ("point", "box"):
        raise ValueError(f"unknown prompt {prompt!r}; choose point or box")
    rng = random.Random(f"eval-{seed}")
    sup.eval()
    ious = []
    for s in samples:
        if len(s.masks) == 0:
            continue
        prompts = prompts_for(s.masks, prompt, rng, box_jitter=0)  # exact boxes
        with autocast(sup.sam.device, precision):
            logits, _ = predict(sup, s.image, prompts, multimask=prompt == "point")
        logits = logits.float()
        full, masks = (logits > 0).cpu(), s.masks.cpu()  # at the image's original size
        per_mask = torch.stack([iou(full[:, c], masks) for c in range(full.shape[1])], 1)
        ious.append(per_mask.max(1).values)  # best of the three masks (one for boxes)
    all_ious = torch.cat(ious) if ious else torch.zeros(0)
    return {
        "miou": float(all_ious.mean()) if len(all_ious) else float("nan"),
        "objects": len(all_ious),
    }
