"""What `supersam` writes and reads: saved models and supernet folders.

A saved model is PATH.pt (its state_dict) + PATH.json (its architecture: the model name, the subnet
of that model it is, and which of its blocks use global attention), for full models and extracted
subnets alike; it loads without a supernet. A supernet folder holds supernet.json (the model name),
checkpoint.pt (everything a resumed training run needs) and best.pt (the weights that scored best on
validation, which extract, search and evaluate use). Every file is written atomically, and every
file read is checked first, with errors that name the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from segment_anything.modeling import Sam

from harness.results import atomic_write
from supersam_min.build import ARCHITECTURES, build
from supersam_min.checkpoint import load_into, load_state, save_state
from supersam_min.supernet import (
    SubnetConfig,
    SuperSAM,
    architecture,
    build_subnet,
)

SUPERNET_META, CHECKPOINT, BEST = "supernet.json", "checkpoint.pt", "best.pt"


def _read_json(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None


def _model_name(path: Path, doc: object) -> str:
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    name = doc.get("model")
    if name not in ARCHITECTURES:
        raise ValueError(
            f"{path}: field 'model' is {name!r}; expected one of {', '.join(ARCHITECTURES)}"
        )
    return name


def read_architecture(path: str | Path) -> dict:
    """A saved model's architecture file, checked against its model's limits before anything is
    built: blocks within the model's depth, MLP widths within its hidden size, global-attention
    positions within the kept blocks."""
    path = Path(path)
    arch = _read_json(path)
    name = _model_name(path, arch)
    for key in ("subnet", "global_attn_positions"):
        if key not in arch:
            raise ValueError(f"{path}: field {key!r} is missing")
    subnet = arch["subnet"]
    if not isinstance(subnet, dict):
        raise ValueError(f"{path}: field 'subnet' must be an object with blocks and mlp_widths")
    for key in ("blocks", "mlp_widths"):
        values = subnet.get(key)
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise ValueError(f"{path}: field 'subnet.{key}' must be a list of integers")
    try:
        cfg = SubnetConfig.from_dict(subnet)
    except ValueError as exc:
        raise ValueError(f"{path}: field 'subnet': {exc}") from None
    spec = ARCHITECTURES[name]
    depth, hidden = spec["depth"], 4 * spec["embed_dim"]
    if not cfg.blocks:
        raise ValueError(
            f"{path}: field 'subnet.blocks' is empty; a model keeps at least one block"
        )
    if cfg.blocks[-1] >= depth or cfg.blocks[0] < 0:
        raise ValueError(
            f"{path}: field 'subnet.blocks' has block {max(cfg.blocks[-1], cfg.blocks[0])} "
            f"outside {name}'s 0..{depth - 1}"
        )
    bad = [w for w in cfg.mlp_widths if not 1 <= w <= hidden]
    if bad:
        raise ValueError(
            f"{path}: field 'subnet.mlp_widths' has width {bad[0]} outside {name}'s 1..{hidden}"
        )
    positions = arch["global_attn_positions"]
    if not isinstance(positions, list) or not all(
        isinstance(p, int) and 0 <= p < len(cfg.blocks) for p in positions
    ):
        raise ValueError(
            f"{path}: field 'global_attn_positions' must list positions among the "
            f"{len(cfg.blocks)} kept blocks"
        )
    return arch


def save_subnet(sup: SuperSAM, path: str | Path, cfg: SubnetConfig | None = None) -> Sam:
    """Extract subnet `cfg` of `sup` (default: the active one), save it as PATH.pt + PATH.json and
    return the extracted model."""
    cfg = cfg or sup.active
    subnet = sup.get_active_subnet(cfg)
    path = Path(path)
    save_state(subnet.state_dict(), path.with_suffix(".pt"))
    arch = architecture(sup.model_name, sup.sam, cfg)
    atomic_write(path.with_suffix(".json"), json.dumps(arch, indent=1) + "\n")
    return subnet


def load_subnet(path: str | Path) -> tuple[Sam, str]:
    """A model saved by save_subnet, and its model name (weights loaded with weights_only)."""
    path = Path(path)
    arch = read_architecture(path.with_suffix(".json"))
    return load_into(build_subnet(arch), path.with_suffix(".pt")), arch["model"]


# -- supernet folders --------------------------------------------------------------------------


def start_supernet(folder: Path, model: str) -> None:
    """Mark `folder` as the supernet of `model` (supernet.json)."""
    atomic_write(folder / SUPERNET_META, json.dumps({"model": model}) + "\n")


def supernet_model(folder: Path) -> str:
    """The model name of a supernet folder, checked."""
    path = folder / SUPERNET_META
    return _model_name(path, _read_json(path))


def save_training_state(folder: Path, state: dict) -> None:
    """Everything a resumed training run needs (model, optimizer, schedule, progress)."""
    save_state(state, folder / CHECKPOINT)


def load_training_state(folder: Path) -> dict:
    """The state save_training_state wrote; a clear error when there is none to resume."""
    path = folder / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return load_state(path)


def save_best(folder: Path, sam: Sam) -> None:
    """The weights that scored best on validation so far."""
    save_state(sam.state_dict(), folder / BEST)


def subnet_from_spec(sup: SuperSAM, spec: str) -> SubnetConfig:
    """`max`, `min`, or a subnet JSON file ({"blocks": [...], "mlp_widths": [...]})."""
    if spec in ("max", "min"):
        return sup.space.named(spec)
    path = Path(spec)
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object with blocks and mlp_widths")
    try:
        cfg = SubnetConfig.from_dict(doc)
        sup.space.validate(cfg)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return cfg


def load_model(
    path: str | Path, subnet: str | None = None, device: str | torch.device = "cpu"
) -> SuperSAM:
    """A saved model (PATH.pt + PATH.json) or a supernet folder (whose best.pt, else its training
    checkpoint, is loaded; `subnet` max (default), min or a JSON file picks the active subnet), as
    a SuperSAM on `device` whose active subnet is what gets evaluated (a saved model: all of it)."""
    path = Path(path)
    if path.is_dir():
        model = supernet_model(path)
        sam = build(model)
        load_into(sam, path / BEST if (path / BEST).is_file() else path / CHECKPOINT)
        sup = SuperSAM(sam, model)
        sup.set_active_subnet(subnet_from_spec(sup, subnet or "max"))
    else:
        if not path.with_suffix(".pt").is_file():
            if path.is_file():  # most likely an official checkpoint, sam_vit_b_01ec64.pth
                raise FileNotFoundError(
                    f"{path} is a weight file, not a saved model ({path.with_suffix('.pt')} + "
                    f"{path.with_suffix('.json')}): import a SAM checkpoint once with `supersam "
                    f"import --checkpoint {path} --out OUT`, then give OUT"
                )
            raise FileNotFoundError(
                f"no saved model at {path}: expected {path.with_suffix('.pt')} and "
                f"{path.with_suffix('.json')}, or a supernet folder"
            )
        if subnet:
            raise ValueError("--subnet applies to a supernet folder, not to a saved model")
        sam, model = load_subnet(path)
        sup = SuperSAM(sam, model)
    return sup.to(device)


def load_supernet(
    path: str | Path, subnet: str = "max", device: str | torch.device = "cpu"
) -> SuperSAM:
    """A supernet folder (what `supersam train --out` wrote) with `subnet` active, as load_model;
    a saved model or a missing path is refused with what was found there."""
    path = Path(path)
    if not (path / SUPERNET_META).is_file():
        if path.is_dir():
            found = f"a folder without {SUPERNET_META}"
        elif path.with_suffix(".pt").is_file():
            found = "a saved model, not a supernet folder"
        else:
            found = "no such folder"
        raise FileNotFoundError(
            f"--supernet {path}: {found}; give the folder that `supersam train --out` wrote"
        )
    return load_model(path, subnet, device)
