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
from supersam_min.geometry import frame, to_original, transform_prompts
from supersam_min.supernet import SuperSAM
from supersam_min.train import decode, prompts_for


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
    return evaluate_prompts(sup, samples, (prompt,), seed, precision)[prompt]


@torch.no_grad()
def evaluate_prompts(
    sup: SuperSAM,
    samples: list[Sample],
    prompts: tuple[str, ...],
    seed: int = 0,
    precision: str = "fp32",
) -> dict[str, dict]:
    """{kind: {"miou", "objects"}} for each prompt kind in `prompts` (point, box), each image
    encoded once for all of them (the encoder is most of an evaluation's time). Each kind draws
    its prompts from its own generator, seeded as `evaluate` seeds it, so each kind's score is the
    one `evaluate` gives it alone."""
    for kind in prompts:
        if kind not in ("point", "box"):
            raise ValueError(f"unknown prompt {kind!r}; choose point or box")
    rngs = {kind: random.Random(f"eval-{seed}") for kind in prompts}
    ious: dict[str, list[torch.Tensor]] = {kind: [] for kind in prompts}
    sam = sup.sam
    sup.eval()
    for s in samples:
        if len(s.masks) == 0:
            continue
        framed = frame(sam, s.image)
        with autocast(sam.device, precision):
            embedding = sup.encode(framed.input)
        masks = s.masks.cpu()
        for kind in prompts:
            drawn = prompts_for(s.masks, kind, rngs[kind], box_jitter=0)  # exact boxes
            at_input = transform_prompts(sam, drawn, framed.original_size)
            with autocast(sam.device, precision):
                logits, _ = decode(sup, embedding, at_input, multimask=kind == "point")
                logits = to_original(sam, logits, framed)
            full = (logits.float() > 0).cpu()  # at the image's original size
            per_mask = torch.stack([iou(full[:, c], masks) for c in range(full.shape[1])], 1)
            ious[kind].append(per_mask.max(1).values)  # best of the three masks (one for boxes)
    return {kind: _summary(ious[kind]) for kind in prompts}


def _summary(ious: list[torch.Tensor]) -> dict:
    all_ious = torch.cat(ious) if ious else torch.zeros(0)
    return {
        "miou": float(all_ious.mean()) if len(all_ious) else float("nan"),
        "objects": len(all_ious),
    }
