"""Sandwich-rule training of the SuperSAM supernet (AttentiveNAS / BigNAS style; SuperSAM sec. 3).

Per step: one zero_grad; the largest subnet, n random subnets and the smallest, each with its own
forward and backward (gradients accumulate); one optimizer step. Under torchrun (DDP: gloo on CPU,
NCCL on GPU) every process draws its own data but the same subnets, and the accumulated gradients
are averaged across processes before the step, so all replicas stay identical. Optional in-place distillation:
the other subnets also match the largest one's (detached) masks. The prompt encoder is frozen; the
image encoder and mask decoder train. Every random choice of a step (data, augmentation, prompts,
subnets) comes from random.Random(f"{seed}-{epoch}-{step}"), so any step can be replayed and a
resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss
from tqdm import tqdm

from harness.device import PRECISIONS, autocast
from supersam_min import storage
from supersam_min.data import Sample, augment, box_prompt, point_prompt
from supersam_min.geometry import frame, low_res_targets, transform_prompts
from supersam_min.supernet import SubnetConfig, SuperSAM

FOCAL_WEIGHT, DICE_WEIGHT = 20.0, 1.0  # the SAM paper's mask loss (Kirillov et al., 2023)


@dataclass
class TrainConfig:
    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10
    n_random: int = 1  # random subnets per step, between the largest and the smallest
    distill: bool = False
    prompt: str = "mixed"  # point | box | mixed (each mask: a point or a box, at random)
    max_masks: int = 16  # per image per step
    iou_loss: bool = True  # also train SAM's IoU head: MSE to the mask's actual IoU
    sandwich: bool = True  # False: only the largest subnet (plain training, e.g. pre-training)
    train_prompt_encoder: bool = False  # True only when pre-training from scratch
    seed: int = 0
    checkpoint_every: int = 50
    precision: str = "fp32"  # bf16: forward passes under bf16 autocast (CUDA)

    def __post_init__(self):
        for name in ("steps", "batch_size", "checkpoint_every", "warmup_steps", "max_masks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {self.n_random}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.prompt not in ("point", "box", "mixed"):
            raise ValueError(f"prompt must be point, box or mixed, got {self.prompt!r}")


@dataclass
class TrainResult:
    """What a training run produced: the per-step losses (largest, random..., smallest) and, with
    validation, the best score and the step whose weights are in best.pt (-1: none scored)."""

    history: list[list[float]] = field(default_factory=list, repr=False)
    best_score: float = float("-inf")
    best_step: int = -1


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice on sigmoid probabilities, per mask: logits, target [..., H, W] -> [...]."""
    p = logits.sigmoid().flatten(-2)
    t = target.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal + Dice per mask: logits, target [..., H, W] -> [...]."""
    focal = sigmoid_focal_loss(logits, target, reduction="none").flatten(-2).mean(-1)
    return FOCAL_WEIGHT * focal + DICE_WEIGHT * dice_loss(logits, target)


def prompts_for(
    masks: torch.Tensor, kind: str, rng: random.Random, box_jitter: int | None = None
) -> dict:
    """Prompt tensors for every mask: {"points": ([M,1,2], [M,1])} or {"boxes": [M,4]}
    (box_jitter: see box_prompt; 0 gives the exact bounding box)."""
    if kind == "point":
        coords = torch.stack([point_prompt(m, rng) for m in masks])[:, None]
        return {"points": (coords, torch.ones(len(masks), 1, dtype=torch.int))}
    if kind == "box":
        return {"boxes": torch.stack([box_prompt(m, rng, box_jitter) for m in masks])}
    raise ValueError(f"unknown prompt kind {kind!r}; choose point or box")


def decode(sup: SuperSAM, embedding: torch.Tensor, prompts: dict, multimask: bool):
    """Low-res mask logits [M, C, L, L] and IoU predictions [M, C] from one image's embedding and
    prompts in the model input's coordinates (geometry.transform_prompts)."""
    sam = sup.sam
    device = sam.device
    points = prompts.get("points")
    if points is not None:
        points = (points[0].to(device), points[1].to(device))
    boxes = prompts.get("boxes")
    sparse, dense = sam.prompt_encoder(
        points=points, boxes=None if boxes is None else boxes.to(device), masks=None
    )
    return sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def step_rng(seed: int, epoch: int, step: int) -> random.Random:
    return random.Random(f"{seed}-{epoch}-{step}")


def distributed() -> tuple[int, int]:
    """(rank, world size), joining the process group torchrun describes if there is one."""
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce and average the accumulated gradients across the DDP processes."""
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def make_batch(samples: list[Sample], cfg: TrainConfig, rng: random.Random) -> list[tuple]:
    """(image, masks, prompts) per image of one step: augmented tiles, <= max_masks objects each."""
    batch = []
    for _ in range(cfg.batch_size):
        s = augment(samples[rng.randrange(len(samples))], rng)
        idx = sorted(rng.sample(range(len(s.masks)), min(cfg.max_masks, len(s.masks))))
        masks = s.masks[idx]
        if cfg.prompt == "mixed":
            kind = rng.choice(["point", "box"])
        else:
            kind = cfg.prompt
        batch.append((s.image, masks, prompts_for(masks, kind, rng)))
    return batch


def subnet_loss(
    sup: SuperSAM, batch: list[tuple], teacher: list | None = None, iou_loss: bool = True
) -> tuple:
    """Mean mask loss of the active subnet over the batch (+ the IoU-head term, + distillation to
    `teacher`). Point prompts are ambiguous: as in SAM, they get three candidate masks and only the
    candidate with the lowest loss is trained; boxes get one mask."""
    sam = sup.sam
    # every image resized and padded to the model's square input: one batch, whatever the sizes
    frames = [frame(sam, img) for img, _, _ in batch]
    embeddings = sup.encode(torch.cat([f.input for f in frames]))
    total, outputs = 0.0, []
    for i, (_, masks, prompts) in enumerate(batch):
        multimask = "points" in prompts
        logits, iou_pred = decode(
            sup,
            embeddings[i : i + 1],
            transform_prompts(sam, prompts, frames[i].original_size),
            multimask,
        )  # [M, C, L, L], [M, C]
        logits, iou_pred = logits.float(), iou_pred.float()  # losses in fp32 under autocast too
        target = low_res_targets(masks.to(sam.device), frames[i], logits.shape[-1])
        target = target[:, None].expand_as(logits)
        per_candidate = mask_loss(logits, target)  # [M, C]
        best = per_candidate.argmin(1)
        rows = torch.arange(len(best))
        loss = per_candidate[rows, best].mean()
        chosen = logits[rows, best]  # [M, L, L]
        if iou_loss:
            with torch.no_grad():
                hit, truth = logits > 0, target > 0
                inter = (hit & truth).flatten(2).sum(2)
                union = (hit | truth).flatten(2).sum(2).clamp(min=1)
            loss = loss + F.mse_loss(iou_pred, inter / union)
        if teacher is not None:
            loss = loss + F.binary_cross_entropy_with_logits(chosen, teacher[i].sigmoid())
        outputs.append(chosen.detach())
        total = total + loss / len(batch)
    return total, outputs


def sandwich_step(
    sup: SuperSAM,
    batch: list[tuple],
    optimizer,
    rng: random.Random,
    n_random: int,
    distill: bool,
    iou_loss: bool = True,
    sandwich: bool = True,
    world: int = 1,
    precision: str = "fp32",
) -> list[float]:
    """One sandwich-rule step; returns the loss of each subnet (largest first, smallest last).

    `rng` picks the random subnets (the same on every process). sandwich=False trains the largest
    subnet alone (plain training). world > 1: gradients are averaged across processes first.
    """
    space = sup.space
    subnets: list[SubnetConfig] = [space.max_subnet()]
    if sandwich:
        subnets += [*(space.sample(rng) for _ in range(n_random)), space.min_subnet()]
    optimizer.zero_grad(set_to_none=True)
    teacher, losses = None, []
    for j, cfg in enumerate(subnets):
        sup.set_active_subnet(cfg)
        with autocast(sup.sam.device, precision):
            loss, outputs = subnet_loss(
                sup, batch, teacher if (distill and j > 0) else None, iou_loss
            )
        loss.backward()
        if j == 0:
            teacher = outputs
        losses.append(float(loss.detach()))
    average_gradients([p for g in optimizer.param_groups for p in g["params"]], world)
    optimizer.step()
    sup.sample_max_subnet()
    return losses


def trainable_parameters(sup: SuperSAM, prompt_encoder: bool = False) -> list[torch.nn.Parameter]:
    """Image encoder and mask decoder; the prompt encoder stays frozen unless `prompt_encoder`
    (pre-training a model from scratch)."""
    for p in sup.sam.prompt_encoder.parameters():
        p.requires_grad_(prompt_encoder)
    return [
        p
        for n, p in sup.sam.named_parameters()
        if prompt_encoder or not n.startswith("prompt_encoder.")
    ]


def _schedule(cfg: TrainConfig):
    def factor(step: int) -> float:  # linear warm-up, then cosine to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


def train(
    sup: SuperSAM,
    samples: list[Sample],
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    validate=None,
) -> TrainResult:
    """Train with the sandwich rule for cfg.steps steps; checkpoints in out_dir/checkpoint.pt.

    With resume=True, continues from that checkpoint exactly (same model, optimizer, schedule and
    random stream). validate(sup) -> score (higher is better), if given, scores the largest subnet
    before training and at every checkpoint; the best weights are kept in out_dir/best.pt.
    stop_after: leave after that many steps of this run (a time-boxed or
    interrupted run), after checkpointing.
    """
    if not samples or all(len(s.masks) == 0 for s in samples):
        raise ValueError("no training sample has an object to segment")
    samples = [s for s in samples if len(s.masks)]
    out_dir = Path(out_dir)
    optimizer = torch.optim.AdamW(
        trainable_parameters(sup, cfg.train_prompt_encoder),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
    start, result = 0, TrainResult()
    if resume:
        state = storage.load_training_state(out_dir)
        sup.sam.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, result = state["step"], TrainResult(**state["result"])
    rank, world = distributed()

    def keep_if_best(step: int) -> None:
        if validate is None or rank != 0:
            return
        sup.sample_max_subnet()
        score = validate(sup)
        sup.train()
        if score > result.best_score:
            result.best_score, result.best_step = score, step
            storage.save_best(out_dir, sup.sam)

    if not resume:
        keep_if_best(0)
    steps_per_epoch = max(1, math.ceil(len(samples) / (cfg.batch_size * world)))
    sup.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = tqdm(
        range(start, end),
        initial=start,
        total=cfg.steps,
        desc="sandwich" if cfg.sandwich else "train",
        disable=not progress or rank != 0,
    )
    for step in bar:
        epoch = step // steps_per_epoch
        batch = make_batch(samples, cfg, random.Random(f"{cfg.seed}-{epoch}-{step}-data-{rank}"))
        losses = sandwich_step(
            sup,
            batch,
            optimizer,
            step_rng(cfg.seed, epoch, step),
            cfg.n_random,
            cfg.distill,
            cfg.iou_loss,
            cfg.sandwich,
            world,
            cfg.precision,
        )
        scheduler.step()
        result.history.append(losses)
        bar.set_postfix(largest=f"{losses[0]:.3f}", smallest=f"{losses[-1]:.3f}")
        done = step + 1
        if (done % cfg.checkpoint_every == 0 or done == end) and rank == 0:
            keep_if_best(done)
            storage.save_training_state(
                out_dir,
                {
                    "model": sup.sam.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": done,
                    "config": asdict(cfg),
                    "result": asdict(result),
                    "model_name": sup.model_name,
                },
            )
    sup.eval()
    return result
