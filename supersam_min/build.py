"""SAM model factories: the official ViT-B/L/H and small CPU configurations, one code path for all.

Like segment_anything/build_sam.py: one private builder takes only the numbers in which the variants
differ, and `ARCHITECTURES` maps each model name to its numbers. Checkpoints are loaded by path with
torch.load(..., weights_only=True) and strict key checking (a mismatch names the missing and
unexpected keys). Nothing is ever downloaded.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from supersam_min.checkpoint import CheckpointError, load_into

__all__ = ["ARCHITECTURES", "CheckpointError", "architecture_of", "build"]


def _build_sam(
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn_indexes: tuple[int, ...],
    img_size: int = 1024,
    prompt_dim: int = 256,
    window_size: int = 14,
    decoder_mlp_dim: int = 2048,
    decoder_heads: int = 8,
    mask_in_chans: int = 16,
    mlp_dims: tuple[int, ...] | None = None,
) -> Sam:
    """A Sam from the stock classes. mlp_dims: per-block MLP hidden sizes (default 4 x embed_dim)."""
    patch = 16
    encoder = ImageEncoderViT(
        depth=depth,
        embed_dim=embed_dim,
        img_size=img_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=num_heads,
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_attn_indexes,
        window_size=window_size,
        out_chans=prompt_dim,
    )
    if mlp_dims is not None:
        from segment_anything.modeling.common import MLPBlock

        if len(mlp_dims) != depth:
            raise ValueError(f"mlp_dims has {len(mlp_dims)} entries for {depth} blocks")
        for block, hidden in zip(encoder.blocks, mlp_dims, strict=True):
            if hidden != block.mlp.lin1.out_features:
                block.mlp = MLPBlock(embedding_dim=embed_dim, mlp_dim=hidden)
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(img_size // patch, img_size // patch),
            input_image_size=(img_size, img_size),
            mask_in_chans=mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_dim, mlp_dim=decoder_mlp_dim, num_heads=decoder_heads
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=prompt_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


ARCHITECTURES: dict[str, dict] = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    # CPU scale: 256 x 256 input (16 x 16 tokens), 6 blocks, windows of 4 tokens
    "sam_tiny": dict(
        embed_dim=96,
        depth=6,
        num_heads=3,
        global_attn_indexes=(2, 5),
        img_size=256,
        prompt_dim=64,
        window_size=4,
        decoder_mlp_dim=256,
        decoder_heads=4,
    ),
}
"""Keyword arguments of _build_sam per model name (ViT-B/L/H: the official SAM numbers)."""


def build(name: str, checkpoint: str | Path | None = None, **overrides) -> Sam:
    """A Sam by name ("vit_b", "vit_l", "vit_h", "sam_tiny"), optionally loading a checkpoint."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    sam = _build_sam(**(ARCHITECTURES[name] | overrides))
    return load_into(sam, checkpoint) if checkpoint is not None else sam


def architecture_of(state: dict, path: str | Path = "the checkpoint") -> str:
    """The name in ARCHITECTURES of the model whose state_dict is `state` (an official SAM
    checkpoint's, or a saved model's), from its image encoder's width and block count.

    Raises:
        CheckpointError: not a SAM image encoder's weights, or one of another size.
    """
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if not isinstance(patch, torch.Tensor) or patch.dim() != 4:
        raise CheckpointError(
            f"{path} holds no SAM image encoder (no image_encoder.patch_embed.proj.weight); is "
            "it a Segment Anything checkpoint?"
        )
    blocks = {key.split(".")[2] for key in state if key.startswith("image_encoder.blocks.")}
    width, depth = patch.shape[0], len(blocks)
    for name, numbers in ARCHITECTURES.items():
        if (numbers["embed_dim"], numbers["depth"]) == (width, depth):
            return name
    raise CheckpointError(
        f"{path} holds a SAM image encoder {width} wide with {depth} blocks, which is none of "
        + ", ".join(f"{n} ({a['embed_dim']} x {a['depth']})" for n, a in ARCHITECTURES.items())
    )
