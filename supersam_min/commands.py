"""The `supersam` commands as typed functions: pre-train the tiny source SAM, train the supernet,
extract, search and evaluate subnets. supersam_min/cli.py parses arguments and calls these; the
reproductions call them with keyword arguments. Each returns a JSON-able summary.

Every function checks its arguments and resolves its device before any work starts. Outputs are
never overwritten silently (supersam_min/outputs.py): an existing output is refused unless
`resume` (continue it) or `overwrite` (replace it) is given, no output replaces an input, and a
run that fails before it saved anything resumable leaves no output behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.device import check_precision, resolve_device
from harness.results import atomic_write
from supersam_min import data as datasets
from supersam_min import storage
from supersam_min.build import ARCHITECTURES, architecture_of, build
from supersam_min.checkpoint import load_into, load_state, model_state
from supersam_min.evaluate import evaluate as evaluate_samples
from supersam_min.geometry import frame
from supersam_min.importance import reorder_mlps, wanda_scores
from supersam_min.outputs import (
    OutputExists,
    check_out_folder,
    claimed,
    model_paths,
    model_reads,
    spares,
)
from supersam_min.supernet import SuperSAM, parameter_count, predicted_parameters
from supersam_min.train import TrainConfig, train


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def pretrain(
    out: str | Path,
    *,
    steps: int = 1500,
    images: int = 64,
    batch_size: int = 2,
    lr: float = 3e-4,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train the tiny SAM from scratch on synthetic blobs: the CPU-scale "pretrained SAM".

    Writes OUT.pt + OUT.json, and OUT_run/ (its resumable training checkpoint)."""
    _positive(images=images)
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        sandwich=False,
        train_prompt_encoder=True,  # from scratch: nothing to keep frozen
        prompt="mixed",
        checkpoint_every=max(1, steps // 4),
    )
    dev = resolve_device(device)
    out = Path(out)
    run_dir = out.parent / (out.name + "_run")
    with claimed(
        [*model_paths(out), run_dir],
        resume=resume,
        overwrite=overwrite,
        resumable=run_dir / storage.CHECKPOINT,
        markers=(storage.CHECKPOINT,),
    ):
        torch.manual_seed(seed)
        sup = SuperSAM(build("sam_tiny"), "sam_tiny").to(dev)
        train(
            sup,
            datasets.synthetic_blobs(images, seed=seed),
            cfg,
            run_dir,
            resume=resume,
            progress=progress,
        )
        storage.save_subnet(sup, out, sup.space.max_subnet())
    return {"model": str(out), "parameters": parameter_count(sup.sam)}


def import_checkpoint(
    checkpoint: str | Path, out: str | Path, *, model: str = "auto", overwrite: bool = False
) -> dict:
    """An official Segment Anything checkpoint (sam_vit_b_01ec64.pth and its kind: a state_dict
    file, loaded with weights_only=True) as a saved model, OUT.pt + OUT.json, which `train
    --init` and `evaluate --model` take. `model`: vit_b, vit_l, vit_h or sam_tiny; auto reads it
    from the weights (the image encoder's width and block count)."""
    if model != "auto" and model not in ARCHITECTURES:
        raise ValueError(f"unknown --model {model!r}; choose auto, {', '.join(ARCHITECTURES)}")
    out = Path(out)
    with claimed(model_paths(out), resume=False, overwrite=overwrite, reads=[checkpoint]):
        state = model_state(load_state(checkpoint), checkpoint)
        name = architecture_of(state, checkpoint) if model == "auto" else model
        sup = SuperSAM(load_into(build(name), checkpoint, state), name)
        storage.save_subnet(sup, out, sup.space.max_subnet())
    return {"model": str(out), "architecture": name, "parameters": parameter_count(sup.sam)}


def train_supernet(
    init: str | Path,
    out: str | Path,
    *,
    data: str = "nuclei",
    val: str | None = None,
    steps: int = 200,
    batch_size: int = 2,
    lr: float = 1e-4,
    n_random: int = 1,
    distill: bool = False,
    plain: bool = False,
    prompt: str = "mixed",
    calibration: int = 4,
    checkpoint_every: int = 50,
    precision: str = "fp32",
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train the supernet of a pretrained model with the sandwich rule (Wanda reordering first).

    `val`: data scoring the largest subnet (box mIoU) before training and at each checkpoint; the
    best weights go to OUT/best.pt (default: nuclei:val with the nuclei data). `plain`: train the
    full model alone, no subnets (the same steps and data: the plain fine-tuning baseline; its
    folder is a supernet folder too, so its subnets can be extracted and scored alike)."""
    _positive(calibration=calibration)
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        n_random=n_random,
        distill=distill,
        sandwich=not plain,
        prompt=prompt,
        checkpoint_every=checkpoint_every,
        precision=precision,
    )
    dev = resolve_device(device)
    check_precision(precision, dev)
    out = Path(out)
    val = val or ("nuclei:val" if data.split(":")[0] == "nuclei" else None)
    samples = datasets.load_spec(data, "train")
    val_samples = datasets.load_spec(val, "val") if val else None
    sup = storage.load_model(init, device=dev)
    with claimed(
        [out],
        resume=resume,
        overwrite=overwrite,
        resumable=out / storage.CHECKPOINT,
        reads=[*model_reads(init), data, val],
        markers=(storage.SUPERNET_META,),
    ):
        if not resume:  # parameter prioritization once, before the first step
            sam = sup.sam
            calib = [frame(sam, s.image).input for s in samples[:calibration]]
            reorder_mlps(sam, wanda_scores(sam, calib))
        out.mkdir(parents=True, exist_ok=True)
        storage.start_supernet(out, sup.model_name)

        def validate(model):
            return evaluate_samples(model, val_samples, "box", seed, precision)["miou"]

        result = train(
            sup,
            samples,
            cfg,
            out,
            resume=resume,
            progress=progress,
            validate=validate if val_samples else None,
        )
    return {
        "supernet": str(out),
        "steps": len(result.history),
        "last_losses": result.history[-1],
        "best_val_miou": result.best_score if val_samples else None,
        "best_step": result.best_step if val_samples else None,
    }


def extract(
    supernet: str | Path,
    out: str | Path,
    *,
    subnet: str = "max",
    device: str = "auto",
    overwrite: bool = False,
) -> dict:
    """Save a subnet of a supernet (max, min or a subnet JSON file) as a standalone SAM."""
    dev = resolve_device(device)
    out = Path(out)
    sup = storage.load_supernet(supernet, subnet, dev)
    with claimed(
        model_paths(out),
        resume=False,
        overwrite=overwrite,
        reads=[*model_reads(supernet), subnet],
    ):
        sub = storage.save_subnet(sup, out)
    return {"model": str(out), "subnet": sup.active.to_dict(), "parameters": parameter_count(sub)}


def search(
    supernet: str | Path,
    out: str | Path,
    *,
    budget: float = 0.7,
    budget_kind: str = "params",
    method: str = "opentuner",
    technique: str | None = None,
    evaluations: int = 50,
    data: str = "nuclei:val",
    prompt: str = "both",
    workers: int = 1,
    devices: list[str] | None = None,
    eval_seed: int = 0,
    precision: str = "fp32",
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Search the supernet's subnets for the best validation mIoU within a budget.

    Writes OUT/trials.json (every proposal; `resume` continues it), OUT/opentuner.db,
    OUT/best_subnet.json and the extracted best subnet OUT/best.pt + OUT/best.json."""
    from supersam_min.search import METHODS, Budget, Evaluator
    from supersam_min.search import search as run_search

    if data.split(":") == ["nuclei", "test"]:
        raise ValueError("search on validation data (nuclei:val); the test split is for the table")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    _positive(evaluations=evaluations, workers=workers)
    limit = Budget(budget_kind, budget)
    dev = resolve_device(device)
    worker_devices = [resolve_device(d) for d in devices] if devices else None
    for d in worker_devices or [dev]:
        check_precision(precision, d)
    out = Path(out)
    samples = datasets.load_spec(data, "val")
    sup = storage.load_supernet(supernet, "max", dev)
    evaluator = Evaluator(
        sup,
        samples,
        prompt,
        seed=eval_seed,  # not `seed`: every search must score a subnet alike
        workers=workers,
        devices=worker_devices,
        precision=precision,
    )
    with claimed(
        [out],
        resume=resume,
        overwrite=overwrite,
        resumable=out / "trials.json",
        reads=[*model_reads(supernet), data],
        markers=("trials.json", "opentuner.db"),
    ):
        result = run_search(
            evaluator,
            limit,
            method,
            evaluations,
            seed,
            out,
            resume=resume,
            progress=progress,
            technique=technique,
        )
        if result.best is None:
            raise ValueError(
                f"no subnet within the budget was found in {len(result.trials)} proposals"
            )
        atomic_write(out / "best_subnet.json", result.best.to_json() + "\n")
        sub = storage.save_subnet(sup, out / "best", result.best)
    return {
        "best_subnet": result.best.to_dict(),
        "validation_score": result.best_score,
        "parameters": parameter_count(sub),
        "fraction_of_full": parameter_count(sub) / evaluator.full_params,
        "evaluations": result.evaluations,
        "proposals": len(result.trials),
        "files": [
            str(out / f) for f in ("trials.json", "best_subnet.json", "best.pt", "best.json")
        ],
    }


def evaluate(
    model: str | Path,
    *,
    subnet: str | None = None,
    data: str = "nuclei:test",
    prompt: str = "point",
    out: str | Path | None = None,
    precision: str = "fp32",
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
) -> dict:
    """mIoU of a saved model, or of a supernet folder's subnet, on a dataset."""
    if prompt not in ("point", "box"):
        raise ValueError(f"unknown prompt {prompt!r}; choose point or box")
    if out is not None and Path(out).exists() and not overwrite:
        raise OutputExists(f"{out} exists; pass --overwrite to replace it, or choose another --out")
    if out is not None:
        spares([Path(out)], [*model_reads(model), subnet, data])
        check_out_folder(Path(out).parent)
    dev = resolve_device(device)
    check_precision(precision, dev)
    samples = datasets.load_spec(data, "test")
    sup = storage.load_model(model, subnet, dev)
    # a supernet counts its active subnet (predicted, no copy); a saved model is counted as it is
    total = parameter_count(sup.sam)
    outside_encoder = total - parameter_count(sup.sam.image_encoder)
    if Path(model).is_dir():
        total = predicted_parameters(sup.sam, sup.active)
    scores = evaluate_samples(sup, samples, prompt, seed, precision)
    result = {
        "model": str(model),
        "arch": sup.model_name,
        "data": data,
        "prompt": prompt,
        "precision": precision,
        **scores,
        "parameters": total,
        "encoder_parameters": total - outside_encoder,
        "subnet": sup.active.to_dict(),
    }
    if out is not None:
        atomic_write(Path(out), json.dumps(result, indent=1) + "\n")
    return result


def command_line(command: str, **kwargs) -> list[str]:
    """The `supersam` argument list equivalent to calling `command` with `kwargs` (provenance)."""
    argv = ["train" if command == "train_supernet" else command]
    for key, value in kwargs.items():
        if value is None or value is False or key == "progress":
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv
