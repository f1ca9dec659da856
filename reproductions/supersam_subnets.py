"""SuperSAM's table, end to end: a pretrained SAM, the supernet trained from it, subnets found by
OpenTuner under size budgets, against the pretrained model, plain fine-tuning and the supernet's
largest subnet.

Pipeline (every stage is a call of a `supersam` command function, recorded in the raw file as the
equivalent `supersam` command line):
  1. the pretrained model: `supersam pretrain` (quick: the tiny SAM on synthetic blobs) or the
     user's checkpoint (full: ViT-B);
  2. `supersam train`: the supernet, sandwich rule, from the pretrained weights (validation split
     picks the kept weights); and the baseline `supersam train --plain`: the same fine-tuning of
     the full model alone, whose subnets of the table's sizes are scored too;
  3. `supersam search` per budget (OpenTuner) on the validation split, and for the search
     comparison OpenTuner and random search at the first budget with several seeds each;
  4. `supersam evaluate` on the test split for the table: mIoU with point and box prompts;
     parameters; encoder GFLOPs (torch.utils.flop_counter); encoder latency (interleaved timing).

Stages keep their outputs in a work folder (default ./runs/supersam-subnets/<scale>); a rerun with
the same settings reuses finished stages and resumes interrupted ones (training checkpoints, search
histories); --fresh starts over.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from harness import environment, results, timing
from harness.device import check_precision, resolve_device
from reproductions.stages import Stages
from reproductions.supersam_subnets_report import render
from supersam_min import commands
from supersam_min.analysis import pareto_front
from supersam_min.data import split_specs
from supersam_min.storage import load_model

EXPERIMENT = "supersam-subnets"
SCALES = {
    "quick": {
        "model": "sam_tiny",
        "pretrain": {"steps": 1500, "images": 64, "lr": 3e-4},
        "train": {"steps": 300, "lr": 1e-4, "checkpoint_every": 50},
        "budgets": [0.7, 0.5, 0.3],
        "evaluations": 40,
        "seeds": list(range(10)),  # per method: enough for a rank test between the two
        "latency_repeat": 7,
    },
    "full": {  # ViT-B from the user's checkpoint, on the user's data (a GPU is advisable)
        "model": "vit_b",
        "pretrain": None,
        "train": {"steps": 5000, "lr": 1e-5, "checkpoint_every": 250},
        "budgets": [0.7, 0.5, 0.3],
        "evaluations": 100,
        "seeds": list(range(5)),
        "latency_repeat": 10,
    },
    "smoke": {  # seconds: exercises every stage, for the tests
        "model": "sam_tiny",
        "pretrain": {"steps": 2, "images": 2, "lr": 3e-4},
        "train": {"steps": 2, "lr": 1e-4, "checkpoint_every": 1},
        "budgets": [0.7, 0.5, 0.3],
        "evaluations": 3,
        "seeds": [0, 1],
        "latency_repeat": 2,
    },
}
# the search comparison: label -> (method, OpenTuner technique: None = the default)
METHODS = {"opentuner": ("opentuner", None), "random": ("random", None)}


# the `repro run` options this experiment takes besides --scale, --results-dir and --no-progress
OPTIONS = ("threads", "seed", "device", "precision", "checkpoint", "data", "work_dir", "fresh")


def run(
    scale: str = "quick",
    threads: int | None = None,
    seed: int = 0,
    results_dir: Path | None = None,
    progress: bool = True,
    checkpoint: str | None = None,
    data: str | None = None,
    work_dir: Path | None = None,
    fresh: bool = False,
    device: str | None = None,
    precision: str = "fp32",
) -> Path:
    cfg = SCALES[scale]
    device = str(resolve_device(device or "auto"))
    check_precision(precision, torch.device(device))
    if scale == "full" and (checkpoint is None or data is None):
        raise ValueError(
            "--scale full needs --checkpoint PATH (the official SAM ViT-B weights) and --data DIR "
            "(DIR/train, DIR/val and DIR/test, each a dataset folder: images/ + masks/)"
        )
    specs = split_specs(data)
    work = Path(work_dir or Path("runs") / EXPERIMENT / scale)
    started = time.perf_counter()
    with timing.threads(threads) as n_threads:
        stages = Stages(work, fresh, progress)
        common = {"device": device, "seed": seed}
        trained = {"device": device, "seed": seed, "precision": precision}
        # 1. the pretrained model
        if cfg["pretrain"]:
            pre = work / "pretrained"
            stages.run(
                "pretrain",
                commands.pretrain,
                {"out": pre, **cfg["pretrain"], **common},
                done=pre.with_suffix(".pt"),
                resumable=work / "pretrained_run" / "checkpoint.pt",
            )
        else:
            pre = _import_checkpoint(work, cfg["model"], Path(checkpoint))
        # 2. the supernet, and the baseline: the same fine-tuning without subnets
        sup, plain = work / "supernet", work / "finetuned"
        for name, out, is_plain in (("train", sup, False), ("finetune", plain, True)):
            stages.run(
                name,
                commands.train_supernet,
                {"init": pre, "out": out, "data": specs["train"], "val": specs["val"]}
                | cfg["train"]
                | {"plain": is_plain}
                | trained,
                done=out / "checkpoint.pt",
                resumable=out / "checkpoint.pt",
            )
        # 3. searches on the validation split
        searches = []
        runs = [(b, "opentuner", cfg["seeds"][0]) for b in cfg["budgets"]]
        runs += [(cfg["budgets"][0], m, s) for m in METHODS for s in cfg["seeds"]]
        runs = list(dict.fromkeys(runs))
        smallest = _smallest_fraction(sup)
        for budget, method, s in tqdm(runs, desc="searches", disable=not progress):
            name = f"search_{budget}_{method}_s{s}"
            out = work / name
            entry = {"budget": budget, "method": method, "seed": s}
            if budget < smallest:
                entry["skipped"] = (
                    f"the smallest subnet in the space has {smallest:.1%} of the full model's "
                    "parameters"
                )
                searches.append(entry)
                continue
            kind, technique = METHODS[method]
            result = stages.run(
                name,
                commands.search,
                {
                    "supernet": sup,
                    "out": out,
                    "budget": budget,
                    "method": kind,
                    "technique": technique,
                    "evaluations": cfg["evaluations"],
                    "data": specs["val"],
                    "device": device,
                    "precision": precision,
                    "seed": s,
                },
                done=out / "best.pt",
                resumable=out / "trials.json",
            )
            trials = json.loads((out / "trials.json").read_text())["trials"]
            searches.append(
                entry | {"result": result, "model": str(out / "best"), "trials": trials}
            )
        # 4. the table, on the test split
        # (label, the model scored: (path, subnet), its search, the same subnet of the baseline)
        rows = [
            ("pretrained (zero-shot)", (pre, None), None, None),
            ("fine-tuned, no supernet", (plain, "max"), None, None),
            ("largest subnet", (sup, "max"), None, "max"),
        ]
        for entry in searches:
            if entry["method"] == "opentuner" and entry["seed"] == cfg["seeds"][0]:
                label = f"best <= {entry['budget']:.0%} ({1 - entry['budget']:.0%} smaller)"
                if "model" not in entry:
                    rows.append((label, None, entry, None))
                    continue
                picked = str(Path(entry["result"]["files"][1]))  # best_subnet.json
                rows.append((label, (entry["model"], None), entry, picked))
        rows.append(("smallest subnet", (sup, "min"), None, "min"))
        table = _table(
            rows, plain, specs["test"], device, precision, cfg["latency_repeat"], progress
        )
        latency = _latency_curve(sup, searches, cfg["latency_repeat"], device, precision)
    records = (
        stages.records
        + table
        + latency
        + [
            {"kind": "trial", "budget": e["budget"], "method": e["method"], "seed": e["seed"], **t}
            for e in searches
            if "trials" in e
            for t in e["trials"]
        ]
        + [
            {
                "kind": "search_skipped",
                "budget": e["budget"],
                "method": e["method"],
                "seed": e["seed"],
                "reason": e["skipped"],
            }
            for e in searches
            if "skipped" in e
        ]
    )
    return results.write_run(
        EXPERIMENT,
        config={
            "scale": scale,
            **cfg,
            "threads": n_threads,
            "seed": seed,
            "device": device,
            "precision": precision,
            "data": specs,
            "checkpoint": checkpoint,
            "work_dir": str(work),
        },
        environment=environment.capture(n_threads),
        records=records,
        results_dir=results_dir,
        timing_method=(
            "encoder latency: one image at the model's input size, interleaved rounds across "
            f"the table's models, 1 warm-up, {cfg['latency_repeat']} rounds, min_ms (best round) "
            "and time_ms (median); mIoU: see supersam_min/evaluate.py"
        ),
        extra={"wall_s": time.perf_counter() - started},
    )


def _import_checkpoint(work: Path, model: str, checkpoint: Path) -> Path:
    """The user's checkpoint as a saved model (PATH.pt + PATH.json) the commands can load
    (`supersam import`), imported again only where the file changed."""
    out = work / "pretrained"
    stat = checkpoint.stat()
    source = {
        "checkpoint": str(checkpoint.resolve()),
        "bytes": stat.st_size,
        "mtime": stat.st_mtime,
        "model": model,
    }
    marker = work / "pretrained.source.json"
    if not (
        out.with_suffix(".pt").exists()
        and marker.is_file()
        and json.loads(marker.read_text()) == source
    ):
        commands.import_checkpoint(checkpoint, out, model=model, overwrite=True)
        results.atomic_write(marker, json.dumps(source))
    return out


def _smallest_fraction(sup_dir: Path) -> float:
    from supersam_min.supernet import parameter_count, predicted_parameters

    sup = load_model(sup_dir)
    return predicted_parameters(sup.sam, sup.space.min_subnet()) / parameter_count(sup.sam)


def _table(
    rows, plain: Path, test: str, device: str, precision: str, repeat: int, progress: bool
) -> list[dict]:
    """One record per table row: test mIoU (point, box), size, encoder GFLOPs and latency; for a
    subnet of the supernet, also the same subnet of the plain fine-tuned model (`plain`)."""
    from supersam_min.search import encoder_gflops, encoder_latency_ms

    out, encoders, models = [], {}, {}
    for label, model, entry, plain_subnet in tqdm(rows, desc="table", disable=not progress):
        if model is None:
            out.append(
                {
                    "kind": "table",
                    "row": label,
                    "budget": entry["budget"],
                    "skipped": entry["skipped"],
                }
            )
            continue
        rec = {"kind": "table", "row": label, "budget": entry["budget"] if entry else None}
        if entry:  # the pick's configuration in the supernet (an extracted model numbers anew)
            rec["supernet_subnet"] = entry["result"]["best_subnet"]
        path, subnet = model
        scored = {"data": test, "device": device, "precision": precision}
        for prompt in ("point", "box"):
            r = commands.evaluate(path, subnet=subnet, prompt=prompt, **scored)
            rec[f"miou_{prompt}"], rec["objects"] = r["miou"], r["objects"]
            rec.update(
                parameters=r["parameters"],
                encoder_parameters=r["encoder_parameters"],
                subnet=r["subnet"],
            )
            if plain_subnet is not None:  # what plain fine-tuning gives at the same size
                r = commands.evaluate(plain, subnet=plain_subnet, prompt=prompt, **scored)
                rec[f"plain_miou_{prompt}"] = r["miou"]
        sup = load_model(path, subnet)
        sam = sup.get_active_subnet() if Path(path).is_dir() else sup.sam
        sam.eval()
        size = sam.image_encoder.img_size
        rec["encoder_gflops"] = encoder_gflops(sam, size)
        rec["image_size"] = size
        x = torch.randn(1, 3, size, size)
        encoders[label] = functools.partial(torch.no_grad()(sam.image_encoder), x)
        models[label] = sam
        out.append(rec)
    timings = timing.measure_interleaved(encoders, warmup=1, repeat=repeat)  # CPU, always
    for rec in out:
        if rec["row"] in timings:
            rec.update(timings[rec["row"]].as_dict())
            if torch.cuda.is_available():  # and on the GPU where there is one
                sam = models[rec["row"]].cuda()
                rec["gpu_min_ms"] = encoder_latency_ms(sam, repeat, precision)
    return out


def _latency_curve(
    sup_dir: Path, searches: list[dict], repeat: int, device: str, precision: str
) -> list[dict]:
    """Encoder latency of every subnet on the Pareto front of the evaluated ones (parameters versus
    validation score), plus the largest and smallest: the latency-versus-parameters figure."""
    from supersam_min.search import encoder_latency_ms
    from supersam_min.supernet import SubnetConfig, predicted_parameters

    sup = load_model(sup_dir, "max", resolve_device(device))
    evaluated = {}
    for e in searches:
        for t in e.get("trials", []):
            if t.get("score") is not None:
                evaluated[json.dumps(t["subnet"])] = (t["parameters"], t["score"])
    front = pareto_front([(p, s, k) for k, (p, s) in evaluated.items()])
    configs = [SubnetConfig.from_json(k) for _, _, k in front]
    configs += [sup.space.max_subnet(), sup.space.min_subnet()]
    configs = list(dict.fromkeys(configs))
    sams = [sup.get_active_subnet(cfg).eval() for cfg in configs]
    if sup.sam.device.type == "cuda":
        ms = [encoder_latency_ms(sam, repeat, precision) for sam in sams]
    else:  # interleaved rounds, so machine noise hits every subnet alike
        calls = {}
        for i, sam in enumerate(sams):
            x = torch.randn(1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size)
            calls[i] = functools.partial(torch.no_grad()(sam.image_encoder), x)
        timings = timing.measure_interleaved(calls, warmup=1, repeat=repeat)
        ms = [timings[i].min_ms for i in range(len(sams))]
    return [
        {
            "kind": "latency",
            "subnet": cfg.to_dict(),
            "parameters": predicted_parameters(sup.sam, cfg),
            "latency_ms": t,
            "device": str(sup.sam.device),
        }
        for cfg, t in zip(configs, ms, strict=True)
    ]


__all__ = ["EXPERIMENT", "SCALES", "render", "run"]
