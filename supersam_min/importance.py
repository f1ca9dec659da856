"""Parameter prioritization: Wanda-style importance of each encoder MLP hidden unit, and the
reordering that puts the most important units first (SuperSAM, section 3; authors' code).

Score of a weight = |W| x the L2 norm of its input feature over all calibration tokens. A hidden
unit's score averages the sum over its lin1 row (inputs: the block's normalised tokens) and the sum
over its lin2 column (inputs: the hidden activations). Reordering lin1 rows, lin1 bias and lin2
columns by descending score leaves the full model's function unchanged.
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam


@torch.no_grad()
def wanda_scores(sam: Sam, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per encoder block, a score per MLP hidden unit from calibration batches [B, 3, S, S]
    (already normalised and padded, as Sam.preprocess makes them)."""
    blocks = sam.image_encoder.blocks
    sq_in1 = [torch.zeros(b.mlp.lin1.in_features) for b in blocks]
    sq_in2 = [torch.zeros(b.mlp.lin2.in_features) for b in blocks]
    hooks = []
    for i, block in enumerate(blocks):

        def hook1(_m, inp, _out, i=i):
            sq_in1[i] += inp[0].detach().float().pow(2).reshape(-1, inp[0].shape[-1]).sum(0).cpu()

        def hook2(_m, inp, _out, i=i):
            sq_in2[i] += inp[0].detach().float().pow(2).reshape(-1, inp[0].shape[-1]).sum(0).cpu()

        hooks += [
            block.mlp.lin1.register_forward_hook(hook1),
            block.mlp.lin2.register_forward_hook(hook2),
        ]
    try:
        for batch in images:
            sam.image_encoder(batch)
    finally:
        for h in hooks:
            h.remove()
    scores = []
    for block, s1, s2 in zip(blocks, sq_in1, sq_in2, strict=True):
        w1 = block.mlp.lin1.weight.detach().abs().cpu()  # [hidden, dim]
        w2 = block.mlp.lin2.weight.detach().abs().cpu()  # [dim, hidden]
        row = (w1 * s1.sqrt()[None, :]).sum(1)  # lin1: one row per hidden unit
        col = (w2 * s2.sqrt()[None, :]).sum(0)  # lin2: one column per hidden unit
        scores.append((row + col) / 2)
    return scores


@torch.no_grad()
def reorder_mlps(sam: Sam, scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Permute every encoder MLP's hidden units by descending score; returns the permutations."""
    perms = []
    for block, score in zip(sam.image_encoder.blocks, scores, strict=True):
        order = torch.argsort(score, descending=True, stable=True).to(block.mlp.lin1.weight.device)
        block.mlp.lin1.weight.copy_(block.mlp.lin1.weight[order])
        block.mlp.lin1.bias.copy_(block.mlp.lin1.bias[order])
        block.mlp.lin2.weight.copy_(block.mlp.lin2.weight[:, order])
        perms.append(order.cpu())
    return perms


P_MIN, P_MAX = 0.1, 0.9


@torch.no_grad()
def layer_importance(sup, samples, prompt: str = "box", seed: int = 0, max_masks: int = 16):
    """Few-shot layer importance (SuperSAM: removal probabilities from each layer's importance).

    For every removable block b, the calibration loss (the training mask loss, fixed prompts) of the
    model without b alone, minus that of the full model: delta_b. The paper gives no formula for
    turning these into probabilities; this reproduction uses a linear map of the clipped deltas,
        p_b = P_MAX - (P_MAX - P_MIN) * max(delta_b, 0) / max_b' max(delta_b', 0)
    (P_MIN = 0.1, P_MAX = 0.9): the least harmful block is removed most often, the most harmful
    least often, and no block is always or never kept. Returns (deltas, search space with p_b).
    """
    import dataclasses
    import random

    from supersam_min.supernet import SubnetConfig
    from supersam_min.train import TrainConfig, make_batch, subnet_loss

    space = sup.space
    batch = make_batch(
        samples,
        TrainConfig(batch_size=len(samples), prompt=prompt, max_masks=max_masks),
        random.Random(f"importance-{seed}"),
    )
    full = space.max_subnet()
    sup.set_active_subnet(full)
    base = float(subnet_loss(sup, batch, iou_loss=False)[0])
    deltas = []
    for b in space.removable:
        keep = [i for i in full.blocks if i != b]
        sup.set_active_subnet(SubnetConfig(tuple(keep), tuple(space.hidden for _ in keep)))
        deltas.append(float(subnet_loss(sup, batch, iou_loss=False)[0]) - base)
    sup.set_active_subnet(full)
    top = max([max(d, 0.0) for d in deltas] + [1e-12])
    probs = tuple(P_MAX - (P_MAX - P_MIN) * max(d, 0.0) / top for d in deltas)
    return deltas, dataclasses.replace(space, removal_prob=probs)
