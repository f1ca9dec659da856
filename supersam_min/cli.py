"""`supersam`: pre-train the tiny source SAM, train the supernet, extract and evaluate subnets.

    supersam pretrain --out runs/tiny/pretrained            synthetic blobs -> a "pretrained SAM"
    supersam train --init runs/tiny/pretrained --out runs/tiny/supernet [--data nuclei|DIR]
    supersam extract --supernet runs/tiny/supernet --subnet min|max|CFG.json --out runs/tiny/small
    supersam search --supernet runs/tiny/supernet --budget 0.7 --out runs/tiny/search70
    supersam evaluate --model runs/tiny/small --data nuclei:test --prompt point [--out r.json]

A saved model is a pair PATH.pt (state_dict, loaded with weights_only=True) + PATH.json (its
architecture), for full models and extracted subnets alike; a supernet is a folder with
checkpoint.pt (resumable), best.pt (best validation weights, used by extract and evaluate) and
supernet.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from harness.device import resolve_device
from supersam_min import data as datasets
from supersam_min.build import build
from supersam_min.evaluate import evaluate
from supersam_min.importance import reorder_mlps, wanda_scores
from supersam_min.supernet import (
    SubnetConfig,
    SuperSAM,
    load_subnet,
    parameter_count,
    predicted_parameters,
)
from supersam_min.train import TrainConfig, train


def load_data(spec: str, split: str) -> list[datasets.Sample]:
    """`nuclei` (the stardist image; split train|val|test), `nuclei:SPLIT`, or a dataset folder."""
    name, _, explicit = spec.partition(":")
    if name == "nuclei":
        return datasets.nuclei_split(explicit or split)
    return datasets.folder_dataset(spec)


def load_model(
    path: str | Path, subnet: str | None = None, device: str | torch.device = "cpu"
) -> tuple[SuperSAM, str]:
    """A saved model (PATH.pt + PATH.json) or a supernet folder (with --subnet), as a SuperSAM whose
    active subnet is what gets evaluated (a saved model: all of it), on `device`."""
    sup, name = _load_model(Path(path), subnet)
    sup.to(device)
    return sup, name


def _load_model(path: Path, subnet: str | None) -> tuple[SuperSAM, str]:
    if path.is_dir():
        meta = json.loads((path / "supernet.json").read_text())
        sam = build(meta["model"])
        best = path / "best.pt"  # the best weights by validation, when training kept them
        if best.is_file():
            sam.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
        else:
            state = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=True)
            sam.load_state_dict(state["model"])
        sup = SuperSAM(sam, meta["model"])
        sup.set_active_subnet(_subnet(sup, subnet or "max"))
        return sup, meta["model"]
    if subnet:
        raise SystemExit("supersam: --subnet applies to a supernet folder, not to a saved model")
    arch = json.loads(path.with_suffix(".json").read_text())
    sam = load_subnet(path)
    return SuperSAM(sam, arch["model"]), arch["model"]


def _subnet(sup: SuperSAM, spec: str) -> SubnetConfig:
    if spec in ("max", "min"):
        return sup.space.named(spec)
    return SubnetConfig.from_json(Path(spec).read_text())


def cmd_pretrain(args) -> dict:
    torch.manual_seed(args.seed)
    sam = build("sam_tiny")
    sup = SuperSAM(sam, "sam_tiny").to(resolve_device(args.device))
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        sandwich=False,
        train_prompt_encoder=True,  # from scratch: nothing to keep frozen
        prompt="mixed",
        checkpoint_every=max(1, args.steps // 4),
    )
    train(
        sup,
        datasets.synthetic_blobs(args.images, seed=args.seed),
        cfg,
        Path(args.out).parent / (Path(args.out).name + "_run"),
        resume=args.resume,
        progress=not args.no_progress,
    )
    sup.save_subnet(args.out, sup.space.max_subnet())
    return {"model": str(args.out), "parameters": parameter_count(sup.sam)}


def cmd_train(args) -> dict:
    sup, model = load_model(args.init, device=resolve_device(args.device))
    sam = sup.sam
    samples = load_data(args.data, "train")
    out = Path(args.out)
    if not args.resume:  # parameter prioritization once, before the first step
        calib = torch.stack([s.image for s in samples[: args.calibration]])
        reorder_mlps(sam, wanda_scores(sam, [sam.preprocess(calib.to(sam.device))]))
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        n_random=args.n_random,
        distill=args.distill,
        prompt=args.prompt,
        checkpoint_every=args.checkpoint_every,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "supernet.json").write_text(json.dumps({"model": model}) + "\n")
    validate = None
    val_spec = args.val or ("nuclei:val" if args.data.split(":")[0] == "nuclei" else None)
    if val_spec:
        val = load_data(val_spec, "val")

        def validate(model):
            return evaluate(model, val, "box", seed=args.seed)["miou"]

    history = train(
        sup, samples, cfg, out, resume=args.resume, progress=not args.no_progress, validate=validate
    )
    return {
        "supernet": str(out),
        "steps": len(history),
        "last_losses": history[-1],
        "best_val_miou": cfg.best_score if val_spec else None,
        "best_step": cfg.best_step if val_spec else None,
    }


def cmd_extract(args) -> dict:
    sup, model = load_model(args.supernet, args.subnet, resolve_device(args.device))
    sub = sup.save_subnet(args.out)
    return {
        "model": str(args.out),
        "subnet": sup.active.to_dict(),
        "parameters": parameter_count(sub),
    }


def cmd_search(args) -> dict:
    from supersam_min.search import Budget, Evaluator, search

    if args.data.split(":") == ["nuclei", "test"]:
        raise ValueError("search on validation data (nuclei:val); the test split is for the table")
    budget = Budget(args.budget_kind, args.budget)
    sup, _ = load_model(args.supernet, "max", resolve_device(args.device))
    evaluator = Evaluator(
        sup,
        load_data(args.data, "val"),
        args.prompt,
        seed=args.eval_seed,  # not --seed: every search must score a subnet alike
        workers=args.workers,
        devices=[resolve_device(d) for d in args.devices] if args.devices else None,
    )
    out = Path(args.out)
    result = search(
        evaluator,
        budget,
        args.method,
        args.evaluations,
        args.seed,
        out,
        resume=args.resume,
        progress=not args.no_progress,
        technique=args.technique,
    )
    if result.best is None:
        raise ValueError(f"no subnet within the budget was found in {len(result.trials)} proposals")
    from harness.results import atomic_write

    atomic_write(out / "best_subnet.json", result.best.to_json() + "\n")
    sub = sup.save_subnet(out / "best", result.best)
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


def cmd_evaluate(args) -> dict:
    sup, model = load_model(args.model, args.subnet, resolve_device(args.device))
    samples = load_data(args.data, "test")
    # a supernet counts its active subnet (predicted, no copy); a saved model is counted as it is
    total = parameter_count(sup.sam)
    outside_encoder = total - parameter_count(sup.sam.image_encoder)
    if Path(args.model).is_dir():
        total = predicted_parameters(sup.sam, sup.active)
    scores = evaluate(sup, samples, args.prompt, seed=args.seed)
    result = {
        "model": str(args.model),
        "arch": model,
        "data": args.data,
        "prompt": args.prompt,
        **scores,
        "parameters": total,
        "encoder_parameters": total - outside_encoder,
        "subnet": sup.active.to_dict(),
    }
    if args.out:
        from harness.results import atomic_write

        atomic_write(Path(args.out), json.dumps(result, indent=1) + "\n")
    return result


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supersam", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N, or auto (the GPU when PyTorch sees one, else the CPU)",
    )

    p = sub.add_parser(
        "pretrain",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common],
        help="train the tiny SAM on synthetic blobs (the CPU-scale 'pretrained SAM')",
    )
    p.add_argument("--out", required=True, help="model path (writes OUT.pt and OUT.json)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--images", type=int, default=64, help="synthetic training images")
    p.add_argument("--batch-size", type=int, default=2, help="images per step (per process)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run exactly")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common],
        help="train the supernet with the sandwich rule",
    )
    p.add_argument("--init", required=True, help="the pretrained model (PATH of PATH.pt/.json)")
    p.add_argument("--out", required=True, help="supernet folder (checkpoint.pt, supernet.json)")
    p.add_argument("--data", default="nuclei", help="nuclei (default) or a dataset folder")
    p.add_argument("--steps", type=int, default=200, help="sandwich steps")
    p.add_argument("--batch-size", type=int, default=2, help="images per step (per process)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate")
    p.add_argument("--n-random", type=int, default=1, help="random subnets per step")
    p.add_argument("--distill", action="store_true", help="in-place distillation from the largest")
    p.add_argument(
        "--prompt",
        choices=["point", "box", "mixed"],
        default="mixed",
        help="training prompts: one point, one jittered box, or either per image",
    )
    p.add_argument("--calibration", type=int, default=4, help="images for Wanda scores")
    p.add_argument(
        "--val",
        default=None,
        help="validation data scoring the largest subnet (box mIoU) before training and "
        "at each checkpoint; the best weights go to OUT/best.pt and are what "
        "extract/evaluate use (default: nuclei:val with the nuclei data)",
    )
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt exactly")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "extract",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common],
        help="save a subnet as a standalone SAM",
    )
    p.add_argument("--supernet", required=True, help="supernet folder")
    p.add_argument("--subnet", default="max", help="max, min, or a subnet JSON file")
    p.add_argument("--out", required=True, help="model path (writes OUT.pt and OUT.json)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser(
        "search",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common],
        help="find the best subnet within a size or latency budget (OpenTuner or random search)",
        description="Search the supernet's subnets (keep/drop per removable block, MLP width per "
        "block) for the best validation mIoU within a budget. Writes OUT/trials.json (every "
        "proposal, rewritten after each evaluation; --resume continues it), OUT/opentuner.db, "
        "OUT/best_subnet.json and the extracted subnet OUT/best.pt + OUT/best.json.",
    )
    p.add_argument("--supernet", required=True, help="supernet folder (from supersam train)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--budget",
        type=float,
        default=0.7,
        help="largest allowed fraction of the full model (0.7 = at least 30%% smaller)",
    )
    p.add_argument(
        "--budget-kind",
        choices=["params", "latency"],
        default="params",
        help="what the budget limits: parameters, or the image encoder's measured latency",
    )
    p.add_argument("--method", choices=["opentuner", "random"], default="opentuner")
    p.add_argument(
        "--technique",
        default=None,
        help="OpenTuner's search technique by name (default: OpenTuner's own, the AUC-bandit "
        "ensemble AUCBanditMetaTechniqueA; e.g. UniformGreedyMutation10, "
        "DifferentialEvolutionAlt)",
    )
    p.add_argument("--evaluations", type=int, default=50, help="mIoU evaluations (feasible, new)")
    p.add_argument("--data", default="nuclei:val", help="validation data: nuclei:val or a folder")
    p.add_argument(
        "--prompt",
        choices=["both", "box", "point"],
        default="both",
        help="objective: the mean of point and box mIoU, or one of them",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="subnets scored at once (threads, each with its own copy of the subnet)",
    )
    p.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="devices the workers use in turn, e.g. cuda:0 cuda:1 (default: --device)",
    )
    p.add_argument(
        "--eval-seed",
        type=int,
        default=0,
        help="seed of the validation point prompts; fixed apart from --seed (which drives the "
        "search), so that searches with different seeds optimise the same objective",
    )
    p.add_argument("--resume", action="store_true", help="continue OUT/trials.json")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "evaluate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[common],
        help="mIoU of a saved model on a dataset",
    )
    p.add_argument("--model", required=True, help="a saved model path, or a supernet folder")
    p.add_argument("--subnet", default=None, help="with a supernet folder: max, min or JSON file")
    p.add_argument("--data", default="nuclei:test", help="nuclei:SPLIT (default test) or a folder")
    p.add_argument(
        "--prompt",
        choices=["point", "box"],
        default="point",
        help="one point (best of 3 masks) or the exact box per object",
    )
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    p.set_defaults(func=cmd_evaluate)

    return parser


def run_command(argv: list[str]) -> dict:
    """Run one `supersam` command line and return its result (what main prints as JSON); errors
    propagate as exceptions. The reproductions drive the pipeline through this."""
    args = make_parser().parse_args(argv)
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"supersam {args.command}: {exc}\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
