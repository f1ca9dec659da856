"""`supersam`: pre-train the tiny source SAM, train the supernet, extract and evaluate subnets.

    supersam pretrain --out runs/tiny/pretrained            synthetic blobs -> a "pretrained SAM"
    supersam import --checkpoint sam_vit_b_01ec64.pth --out runs/vit_b/pretrained   or the real one
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
import functools
import json
import sys

from supersam_min import commands
from supersam_min.build import ARCHITECTURES


def call(args: argparse.Namespace) -> dict:
    """Call the sub-command's function with its parsed options: each sub-parser declares exactly
    the function's keyword arguments, so no option is silently dropped."""
    return args.func(**{k: v for k, v in vars(args).items() if k not in ("command", "func")})


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Adds each option's default to its help where the default says something: not for on/off
    flags (`--no-progress (default: True)` read as "no progress bar by default"), options without
    one (None), or help that already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supersam",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # options in full or not at all (argparse would take --checkpoint for --checkpoint-every)
    command = functools.partial(sub.add_parser, allow_abbrev=False, formatter_class=DefaultsHelp)
    device = argparse.ArgumentParser(add_help=False)  # option groups, each where it applies
    device.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N, or auto (the GPU when PyTorch sees one, else the CPU)",
    )
    seed = argparse.ArgumentParser(add_help=False)
    seed.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    progress = argparse.ArgumentParser(add_help=False)
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    common = [device, seed, progress]

    precision = argparse.ArgumentParser(add_help=False)
    precision.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: forward passes under bf16 autocast (CUDA only)",
    )

    p = command(
        "pretrain",
        parents=[*common],
        help="train the tiny SAM on synthetic blobs (the CPU-scale 'pretrained SAM')",
    )
    p.add_argument("--out", required=True, help="model path (writes OUT.pt and OUT.json)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--images", type=int, default=64, help="synthetic training images")
    p.add_argument("--batch-size", type=int, default=2, help="images per step (per process)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run exactly")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=commands.pretrain)

    p = command(
        "import",
        help="an official SAM checkpoint (sam_vit_b_01ec64.pth, ...) as a saved model",
        description="Read an official Segment Anything checkpoint (a state_dict file, loaded "
        "with weights_only=True) and save it as a model OUT.pt + OUT.json, which `train --init` "
        "and `evaluate --model` take. Nothing is downloaded.",
    )
    p.add_argument("--checkpoint", required=True, help="the checkpoint file")
    p.add_argument("--out", required=True, help="model path (writes OUT.pt and OUT.json)")
    p.add_argument(
        "--model",
        choices=["auto", *ARCHITECTURES],
        default="auto",
        help="its architecture; auto: read from the weights",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=commands.import_checkpoint)

    p = command(
        "train",
        parents=[*common, precision],
        help="train the supernet with the sandwich rule",
    )
    p.add_argument(
        "--init",
        required=True,
        help="the pretrained model (PATH of PATH.pt/.json: `supersam pretrain` or `supersam "
        "import` wrote it)",
    )
    p.add_argument("--out", required=True, help="supernet folder (checkpoint.pt, supernet.json)")
    p.add_argument("--data", default="nuclei", help="nuclei (default) or a dataset folder")
    p.add_argument("--steps", type=int, default=200, help="sandwich steps")
    p.add_argument("--batch-size", type=int, default=2, help="images per step (per process)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW peak learning rate")
    p.add_argument("--n-random", type=int, default=1, help="random subnets per step")
    p.add_argument("--distill", action="store_true", help="in-place distillation from the largest")
    p.add_argument(
        "--plain",
        action="store_true",
        help="fine-tune the full model alone, no subnets: the baseline the supernet is compared with",
    )
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
    p.add_argument(
        "--checkpoint-every", type=int, default=50, help="steps between checkpoints (and scores)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt exactly")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=commands.train_supernet)

    p = command(
        "extract",
        parents=[device],
        help="save a subnet as a standalone SAM",
    )
    p.add_argument("--supernet", required=True, help="supernet folder")
    p.add_argument("--subnet", default="max", help="max, min, or a subnet JSON file")
    p.add_argument("--out", required=True, help="model path (writes OUT.pt and OUT.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=commands.extract)

    p = command(
        "search",
        parents=[*common, precision],
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
    p.add_argument(
        "--method",
        choices=["opentuner", "random"],
        default="opentuner",
        help="opentuner: OpenTuner steers the search; random: each parameter drawn uniformly, "
        "subnets over the budget drawn again (the baseline OpenTuner is compared with)",
    )
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=commands.search)

    p = command(
        "evaluate",
        parents=[device, seed, precision],
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=commands.evaluate)

    return parser


def run_command(argv: list[str]) -> dict:
    """Run one `supersam` command line and return its result (what main prints as JSON); errors
    propagate as exceptions."""
    args = make_parser().parse_args(argv)
    return call(args)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        result = call(args)
    except (ValueError, OSError) as exc:  # bad input, files: one line, no traceback
        parser.exit(2, f"supersam {args.command}: {exc}\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
