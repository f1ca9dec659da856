"""SuperSAM's weight-sharing supernetwork over a segment_anything Sam (arXiv 2501.08504, section 3).

Two elasticities of the image encoder, as in the authors' code (github.com/wmabebe/OFM_SAM):
  * depth: some blocks may be removed (each self-contained: its own window size and rel-pos tables);
  * MLP width: each block's hidden width is a prefix of its (importance-ordered) hidden units.
Elastic layers keep the full weight and slice it in forward, like once-for-all's DynamicLinear; depth
is the index list of active blocks. Verbs: set_active_subnet, sample_max_subnet, sample_min_subnet,
sample_active_subnet(rng), get_active_subnet (a standalone stock-class Sam: a real reduction).
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.modeling.common import MLPBlock

from supersam_min.build import ARCHITECTURES, _build_sam


@dataclass(frozen=True)
class SubnetConfig:
    """One subnetwork: the kept encoder blocks (ascending indices of the full model) and each kept
    block's MLP hidden width (number of leading hidden units)."""

    blocks: tuple[int, ...]
    mlp_widths: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        object.__setattr__(self, "mlp_widths", tuple(int(w) for w in self.mlp_widths))
        if len(self.blocks) != len(self.mlp_widths):
            raise ValueError(f"{len(self.blocks)} blocks but {len(self.mlp_widths)} MLP widths")
        if list(self.blocks) != sorted(set(self.blocks)):
            raise ValueError(f"blocks must be distinct and ascending, got {self.blocks}")

    def to_dict(self) -> dict:
        return {"blocks": list(self.blocks), "mlp_widths": list(self.mlp_widths)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> SubnetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown subnet configuration key(s) {unknown}; expected {sorted(known)}"
            )
        missing = sorted(known - set(data))
        if missing:
            raise ValueError(f"subnet configuration lacks {missing}")
        return cls(tuple(data["blocks"]), tuple(data["mlp_widths"]))

    @classmethod
    def from_json(cls, text: str) -> SubnetConfig:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class SearchSpace:
    """Which blocks may go (with their removal probabilities) and the MLP width choices.

    width_fractions are of the full hidden size; the full width is used only by the largest subnet;
    blocks in `fixed_width` always keep the full width.
    """

    depth: int
    hidden: int
    removable: tuple[int, ...]
    removal_prob: tuple[float, ...]
    width_fractions: tuple[float, ...]
    fixed_width: tuple[int, ...] = (0,)
    widths: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        if len(self.removal_prob) != len(self.removable):
            raise ValueError("one removal probability per removable block")
        if any(not 0 <= b < self.depth for b in self.removable):
            raise ValueError(f"removable blocks {self.removable} outside 0..{self.depth - 1}")
        widths = tuple(sorted({max(1, round(f * self.hidden)) for f in self.width_fractions}))
        if not widths or widths[-1] > self.hidden:
            raise ValueError(f"width fractions {self.width_fractions} must lie in (0, 1]")
        object.__setattr__(self, "widths", widths)

    def validate(self, cfg: SubnetConfig) -> None:
        """ValueError naming the problem when `cfg` is outside this space."""
        for b, w in zip(cfg.blocks, cfg.mlp_widths, strict=True):
            if not 0 <= b < self.depth:
                raise ValueError(f"block {b} does not exist (the model has {self.depth})")
            if not 1 <= w <= self.hidden:
                raise ValueError(f"MLP width {w} of block {b} out of range 1..{self.hidden}")
        dropped = set(range(self.depth)) - set(cfg.blocks)
        if dropped - set(self.removable):
            raise ValueError(
                f"blocks {sorted(dropped - set(self.removable))} are not removable "
                f"(removable: {list(self.removable)})"
            )

    def max_subnet(self) -> SubnetConfig:
        return SubnetConfig(tuple(range(self.depth)), (self.hidden,) * self.depth)

    def min_subnet(self) -> SubnetConfig:
        blocks = tuple(b for b in range(self.depth) if b not in self.removable)
        return SubnetConfig(
            blocks, tuple(self.hidden if b in self.fixed_width else self.widths[0] for b in blocks)
        )

    def named(self, name: str, seed: int = 0) -> SubnetConfig:
        """`max`, `min`, or `random` (the subnet sample() draws from random.Random(seed))."""
        if name == "max":
            return self.max_subnet()
        if name == "min":
            return self.min_subnet()
        if name == "random":
            return self.sample(random.Random(seed))
        raise ValueError(f"unknown subnet {name!r}; choose max, min or random")

    def sample(self, rng: random.Random) -> SubnetConfig:
        """A random subnet: each removable block dropped with its probability, widths uniform."""
        drop = {
            b for b, p in zip(self.removable, self.removal_prob, strict=True) if rng.random() < p
        }
        blocks = tuple(b for b in range(self.depth) if b not in drop)
        widths = tuple(
            self.hidden if b in self.fixed_width else rng.choice(self.widths) for b in blocks
        )
        return SubnetConfig(blocks, widths)


def vit_b_search_space() -> SearchSpace:
    """The authors' ViT-B space: blocks 1, 2, 5, 6, 9 removable (p = 0.5), widths 768, 1020, 1536,
    2304 of 3072, block 0 fixed at full width."""
    return SearchSpace(
        depth=12,
        hidden=3072,
        removable=(1, 2, 5, 6, 9),
        removal_prob=(0.5,) * 5,
        width_fractions=(768 / 3072, 1020 / 3072, 1536 / 3072, 2304 / 3072),
    )


def default_search_space(sam: Sam) -> SearchSpace:
    """ViT-B's space for ViT-B; for others the same kind of space: every block but the first and
    the last removable (p = 0.5; global-attention blocks too, as ViT-B's 2 and 5), widths 1/4,
    1/3, 1/2, 3/4 of the hidden size, block 0 at full width."""
    blocks = sam.image_encoder.blocks
    hidden = blocks[0].mlp.lin1.out_features
    if len(blocks) == 12 and hidden == 3072:
        return vit_b_search_space()
    removable = tuple(range(1, len(blocks) - 1))
    return SearchSpace(
        depth=len(blocks),
        hidden=hidden,
        removable=removable,
        removal_prob=(0.5,) * len(removable),
        width_fractions=(1 / 4, 1 / 3, 1 / 2, 3 / 4),
    )


class ElasticMLP(MLPBlock):
    """segment_anything's MLPBlock whose hidden width can shrink to its first `active` units.

    Adopts an existing block's layers, so parameter names (mlp.lin1.weight, ...) stay the same.
    """

    def __init__(self, block: MLPBlock):
        torch.nn.Module.__init__(self)
        self.lin1, self.lin2, self.act = block.lin1, block.lin2, block.act
        self.active = block.lin1.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.active
        hidden = self.act(F.linear(x, self.lin1.weight[:w], self.lin1.bias[:w]))
        return F.linear(hidden, self.lin2.weight[:, :w], self.lin2.bias)

    def narrowed(self, width: int | None = None) -> MLPBlock:
        """A stock MLPBlock with the first `width` (default: the active) hidden units, copied."""
        w = width or self.active
        block = MLPBlock(self.lin1.in_features, w, act=type(self.act))
        with torch.no_grad():
            block.lin1.weight.copy_(self.lin1.weight[:w])
            block.lin1.bias.copy_(self.lin1.bias[:w])
            block.lin2.weight.copy_(self.lin2.weight[:, :w])
            block.lin2.bias.copy_(self.lin2.bias)
        return block.to(self.lin1.weight.device, self.lin1.weight.dtype)


class SuperSAM(torch.nn.Module):
    """A Sam whose encoder runs any subnet of `space` with shared weights."""

    def __init__(self, sam: Sam, model_name: str, space: SearchSpace | None = None):
        super().__init__()
        if model_name not in ARCHITECTURES:
            raise ValueError(
                f"unknown model {model_name!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        self.sam = sam
        self.model_name = model_name
        self.space = space or default_search_space(sam)
        for block in sam.image_encoder.blocks:
            if not isinstance(block.mlp, ElasticMLP):
                block.mlp = ElasticMLP(block.mlp)
        blocks = sam.image_encoder.blocks  # the model as it is: all blocks at their own widths
        self.active = SubnetConfig(
            tuple(range(len(blocks))), tuple(b.mlp.lin1.out_features for b in blocks)
        )

    # -- the subnet verbs ------------------------------------------------------------------
    def set_active_subnet(self, cfg: SubnetConfig) -> None:
        self.space.validate(cfg)
        for block in self.sam.image_encoder.blocks:
            block.mlp.active = block.mlp.lin1.out_features
        for b, w in zip(cfg.blocks, cfg.mlp_widths, strict=True):
            self.sam.image_encoder.blocks[b].mlp.active = w
        self.active = cfg

    def sample_max_subnet(self) -> SubnetConfig:
        self.set_active_subnet(self.space.max_subnet())
        return self.active

    def sample_min_subnet(self) -> SubnetConfig:
        self.set_active_subnet(self.space.min_subnet())
        return self.active

    def sample_active_subnet(self, rng: random.Random) -> SubnetConfig:
        self.set_active_subnet(self.space.sample(rng))
        return self.active

    def get_active_subnet(self, cfg: SubnetConfig | None = None) -> Sam:
        """A standalone Sam of the stock classes with only the active blocks and narrowed MLPs."""
        cfg = cfg or self.active
        self.space.validate(cfg)
        return extract(self.sam, self.model_name, cfg)

    # -- forward ----------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The image encoder of the active subnet: images [B, 3, S, S] (normalised) -> embeddings."""
        enc = self.sam.image_encoder
        x = enc.patch_embed(images)
        if enc.pos_embed is not None:
            x = x + enc.pos_embed
        for b in self.active.blocks:
            x = enc.blocks[b](x)
        return enc.neck(x.permute(0, 3, 1, 2))


def architecture(model_name: str, sam: Sam, cfg: SubnetConfig) -> dict:
    """The JSON-able description a subnet is rebuilt from (see build_subnet)."""
    blocks = sam.image_encoder.blocks
    return {
        "model": model_name,
        "subnet": cfg.to_dict(),
        "global_attn_positions": [
            i for i, b in enumerate(cfg.blocks) if blocks[b].window_size == 0
        ],
    }


def build_subnet(arch: dict) -> Sam:
    """An (untrained) stock-class Sam shaped like a saved subnet; needs no supernet."""
    cfg = SubnetConfig.from_dict(arch["subnet"])
    kwargs = dict(ARCHITECTURES[arch["model"]])
    kwargs.update(
        depth=len(cfg.blocks),
        global_attn_indexes=tuple(arch["global_attn_positions"]),
        mlp_dims=cfg.mlp_widths,
    )
    return _build_sam(**kwargs)


def extract(sam: Sam, model_name: str, cfg: SubnetConfig) -> Sam:
    """Copy the subnet `cfg` of `sam` into a new, smaller stock-class Sam (a walk over the layers:
    the kept blocks, each elastic MLP narrowed to its stock self)."""
    sub = copy.deepcopy(sam)
    blocks = sub.image_encoder.blocks
    kept = []
    for b, w in zip(cfg.blocks, cfg.mlp_widths, strict=True):
        block = blocks[b]
        if isinstance(block.mlp, ElasticMLP):
            block.mlp = block.mlp.narrowed(w)
        kept.append(block)
    sub.image_encoder.blocks = torch.nn.ModuleList(kept)
    for p in sub.parameters():
        p.requires_grad_(True)  # a standalone model: every parameter its own again
    return sub.eval()


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def predicted_parameters(sam: Sam, cfg: SubnetConfig) -> int:
    """Parameters of the subnet `cfg` of `sam`, computed without building it."""
    blocks = sam.image_encoder.blocks
    total = parameter_count(sam) - sum(parameter_count(b) for b in blocks)
    for b, w in zip(cfg.blocks, cfg.mlp_widths, strict=True):
        block = blocks[b]
        dim = block.mlp.lin1.in_features
        mlp_full = parameter_count(block.mlp.lin1) + parameter_count(block.mlp.lin2)
        total += parameter_count(block) - mlp_full + (dim * w + w) + (w * dim + dim)
    return total
