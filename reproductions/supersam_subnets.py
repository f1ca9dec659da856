"""SuperSAM's table, end to end: a pretrained SAM, the supernet trained from it, subnets found by
OpenTuner under size budgets, against the pretrained model and the supernet's largest subnet.

Pipeline (every stage is one `supersam` command line, recorded in the raw file):
  1. the pretrained model: `supersam pretrain` (quick: the tiny SAM on synthetic blobs) or the
     user's checkpoint (full: ViT-B);
  2. `supersam train`: the supernet, sandwich rule, from the pretrained weights (validation split
     picks the kept weights);
  3. `supersam search` per budget (OpenTuner) on the validation split, and for the convergence
     comparison OpenTuner and random search at the first budget with 3 seeds each;
  4. `supersam evaluate` on the test split for the table: mIoU with point and box prompts;
     parameters; encoder GFLOPs (torch.utils.flop_counter); encoder latency (interleaved timing).

Stages keep their outputs in a work folder (default ./runs/supersam-subnets/<scale>); a rerun with
the same settings reuses finished stages and resumes interrupted ones (training checkpoints, search
histories); --fresh starts over.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from harness import environment, results, timing
from reproductions.tables import fmt

EXPERIMENT = "supersam-subnets"
SCALES = {
    "quick": {
        "model": "sam_tiny",
        "pretrain": {"steps": 1500, "images": 64, "lr": 3e-4},
        "train": {"steps": 300, "lr": 1e-4, "checkpoint_every": 50},
        "budgets": [0.7, 0.5, 0.3],
        "evaluations": 40,
        "seeds": [0, 1, 2],
        "latency_repeat": 7,
    },
    "full": {  # ViT-B from the user's checkpoint, on the user's data (a GPU is advisable)
        "model": "vit_b",
        "pretrain": None,
        "train": {"steps": 5000, "lr": 1e-5, "checkpoint_every": 250},
        "budgets": [0.7, 0.5, 0.3],
        "evaluations": 100,
        "seeds": [0, 1, 2],
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


def _supersam(argv: list[str]) -> dict:
    from supersam_min.cli import run_command

    return run_command([str(a) for a in argv])


class Stages:
    """Runs pipeline stages in `work`, reusing one whose command and inputs are unchanged."""

    def __init__(self, work: Path, fresh: bool, progress: bool):
        if fresh and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.progress = work, progress
        self.ledger_path = work / "stages.json"
        self.ledger = json.loads(self.ledger_path.read_text()) if self.ledger_path.is_file() else {}
        self.records: list[dict] = []

    def run(self, name: str, argv: list, done: Path, resumable: Path | None = None) -> dict:
        """Run `supersam argv` unless the ledger says it finished with this very command line and
        `done` exists; resume (--resume) when `resumable` exists from the same command line."""
        from harness.results import atomic_write

        argv = [str(a) for a in argv]
        git = environment.git_state()  # another commit: the stage runs again
        key = hashlib.sha256(json.dumps([argv, git.get("commit")]).encode()).hexdigest()[:16]
        entry = self.ledger.get(name)
        same = entry is not None and entry["key"] == key
        if same and entry.get("result") is not None and done.exists():
            self.records.append(
                {
                    "kind": "stage",
                    "stage": name,
                    "argv": argv,
                    "reused": True,
                    "wall_s": entry["wall_s"],
                    "git": entry["git"],
                }
            )
            return entry["result"]
        resume = same and resumable is not None and resumable.exists()
        self.ledger[name] = {
            "key": key,
            "argv": argv,
            "result": None,
            "wall_s": None,
            "git": git,
        }
        atomic_write(self.ledger_path, json.dumps(self.ledger, indent=1))
        started = time.perf_counter()
        flags = (["--resume"] if resume else []) + ([] if self.progress else ["--no-progress"])
        result = _supersam(argv + flags)
        wall = time.perf_counter() - started
        self.ledger[name].update(result=result, wall_s=wall)
        atomic_write(self.ledger_path, json.dumps(self.ledger, indent=1))
        self.records.append(
            {
                "kind": "stage",
                "stage": name,
                "argv": argv + flags,
                "reused": False,
                "resumed": resume,
                "wall_s": wall,
                "git": self.ledger[name]["git"],
            }
        )
        return result


def _data_specs(scale: str, data: str | None) -> dict[str, str]:
    if data is None:
        if scale == "full":
            raise ValueError(
                "--scale full needs --data DIR with DIR/train, DIR/val and DIR/test, each a "
                "dataset folder (images/ + masks/, see the README)"
            )
        return {"train": "nuclei:train", "val": "nuclei:val", "test": "nuclei:test"}
    root = Path(data)
    missing = [s for s in ("train", "val", "test") if not (root / s).is_dir()]
    if missing:
        raise ValueError(
            f"--data {root}: no {', '.join(missing)} folder(s); expected train/ val/ test/"
        )
    return {s: str(root / s) for s in ("train", "val", "test")}


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
    **_,
) -> Path:
    from harness.device import resolve_device

    cfg = SCALES[scale]
    device = str(resolve_device(device or "auto"))
    specs = _data_specs(scale, data)
    if scale == "full" and checkpoint is None:
        raise ValueError("--scale full needs --checkpoint PATH: the official SAM ViT-B weights")
    work = Path(work_dir or Path("runs") / EXPERIMENT / scale)
    started = time.perf_counter()
    with timing.threads(threads) as n_threads:
        stages = Stages(work, fresh, progress)
        dev = ["--device", device, "--seed", seed]
        # 1. the pretrained model
        if cfg["pretrain"]:
            pre = work / "pretrained"
            p = cfg["pretrain"]
            stages.run(
                "pretrain",
                [
                    "pretrain",
                    "--out",
                    pre,
                    "--steps",
                    p["steps"],
                    "--images",
                    p["images"],
                    "--lr",
                    p["lr"],
                    *dev,
                ],
                done=pre.with_suffix(".pt"),
                resumable=work / "pretrained_run" / "checkpoint.pt",
            )
        else:
            pre = _import_checkpoint(work, cfg["model"], Path(checkpoint))
        # 2. the supernet
        sup = work / "supernet"
        t = cfg["train"]
        stages.run(
            "train",
            [
                "train",
                "--init",
                pre,
                "--out",
                sup,
                "--data",
                specs["train"],
                "--val",
                specs["val"],
                "--steps",
                t["steps"],
                "--lr",
                t["lr"],
                "--checkpoint-every",
                t["checkpoint_every"],
                *dev,
            ],
            done=sup / "checkpoint.pt",
            resumable=sup / "checkpoint.pt",
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
            if budget < smallest:
                searches.append(
                    {
                        "budget": budget,
                        "method": method,
                        "seed": s,
                        "skipped": f"the smallest subnet in the space has {smallest:.1%} of the "
                        "full model's parameters",
                    }
                )
                continue
            kind, technique = METHODS[method]
            result = stages.run(
                name,
                [
                    "search",
                    *(["--technique", technique] if technique else []),
                    "--supernet",
                    sup,
                    "--out",
                    out,
                    "--budget",
                    budget,
                    "--method",
                    kind,
                    "--evaluations",
                    cfg["evaluations"],
                    "--data",
                    specs["val"],
                    "--device",
                    device,
                    "--seed",
                    s,
                ],
                done=out / "best.pt",
                resumable=out / "trials.json",
            )
            trials = json.loads((out / "trials.json").read_text())["trials"]
            searches.append(
                {
                    "budget": budget,
                    "method": method,
                    "seed": s,
                    "result": result,
                    "model": str(out / "best"),
                    "trials": trials,
                }
            )
        # 4. the table, on the test split
        rows = [("pretrained (zero-shot)", [pre], None), ("largest subnet", [sup], None)]
        for entry in searches:
            if entry["method"] == "opentuner" and entry["seed"] == cfg["seeds"][0]:
                label = f"best <= {entry['budget']:.0%} ({1 - entry['budget']:.0%} smaller)"
                rows.append((label, [entry["model"]] if "model" in entry else None, entry))
        rows.append(("smallest subnet", [sup, "--subnet", "min"], None))
        table = _table(rows, specs["test"], device, cfg["latency_repeat"], progress)
        latency = _latency_curve(sup, searches, cfg["latency_repeat"], device)
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
    """The user's checkpoint as a saved model (PATH.pt + PATH.json) the commands can load."""
    from supersam_min.build import build
    from supersam_min.supernet import SuperSAM

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
        sup = SuperSAM(build(model, checkpoint), model)
        sup.save_subnet(out, sup.space.max_subnet())
        results.atomic_write(marker, json.dumps(source))
    return out


def _smallest_fraction(sup_dir: Path) -> float:
    from supersam_min.cli import load_model
    from supersam_min.supernet import parameter_count, predicted_parameters

    sup, _ = load_model(sup_dir)
    return predicted_parameters(sup.sam, sup.space.min_subnet()) / parameter_count(sup.sam)


def _table(rows, test: str, device: str, repeat: int, progress: bool) -> list[dict]:
    from supersam_min.cli import load_model
    from supersam_min.search import encoder_gflops, encoder_latency_ms

    out, encoders, models = [], {}, {}
    for label, model, entry in tqdm(rows, desc="table", disable=not progress):
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
        for prompt in ("point", "box"):
            r = _supersam(
                [
                    "evaluate",
                    "--model",
                    *model,
                    "--data",
                    test,
                    "--prompt",
                    prompt,
                    "--device",
                    device,
                ]
            )
            rec[f"miou_{prompt}"], rec["objects"] = r["miou"], r["objects"]
            rec.update(
                parameters=r["parameters"],
                encoder_parameters=r["encoder_parameters"],
                subnet=r["subnet"],
            )
        path = Path(model[0])
        sup, _ = load_model(
            path, model[2] if len(model) > 2 else ("max" if path.is_dir() else None)
        )
        sam = sup.get_active_subnet() if path.is_dir() else sup.sam
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
                rec["gpu_min_ms"] = encoder_latency_ms(models[rec["row"]].cuda(), repeat)
    return out


def _latency_curve(sup_dir: Path, searches: list[dict], repeat: int, device: str) -> list[dict]:
    """Encoder latency of every subnet on the Pareto front of the evaluated ones (parameters versus
    validation score), plus the largest and smallest: the latency-versus-parameters figure."""
    from harness.device import resolve_device
    from supersam_min.cli import load_model
    from supersam_min.search import encoder_latency_ms
    from supersam_min.supernet import SubnetConfig, predicted_parameters

    sup, _ = load_model(sup_dir, "max", resolve_device(device))
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
        ms = [encoder_latency_ms(sam, repeat) for sam in sams]
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


def pareto_front(points: list[tuple]) -> list[tuple]:
    """The points (size, score, ...) not beaten by a smaller-or-equal one with a higher score,
    by ascending size."""
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


# -- rendering -------------------------------------------------------------------------------


def convergence(doc: dict) -> dict:
    """Per method, per seed: best validation score after each evaluation, at the first budget."""
    budget = doc["config"]["budgets"][0]
    curves: dict[str, dict[int, list[float]]] = {}
    for r in doc["records"]:
        if r["kind"] != "trial" or r["budget"] != budget or r["evaluation"] is None:
            continue
        curves.setdefault(r["method"], {}).setdefault(r["seed"], []).append(
            (r["evaluation"], r["score"])
        )
    out = {}
    for method, per_seed in curves.items():
        out[method] = {}
        for s, pts in per_seed.items():
            best, curve = -math.inf, []
            for _, score in sorted(pts):
                best = max(best, score)
                curve.append(best)
            out[method][s] = curve
    return out


def reach_summary(curves: dict) -> dict:
    """Evaluations each run needed to reach the best score any run found (None: never); medians."""
    target = max((c[-1] for per in curves.values() for c in per.values() if c), default=None)
    out = {"target": target, "methods": {}}
    for method, per in curves.items():
        needs = {}
        for s, c in per.items():
            needs[s] = next((i + 1 for i, v in enumerate(c) if v >= target), None)
        finite = [n if n is not None else math.inf for n in needs.values()]
        out["methods"][method] = {"per_seed": needs, "median": statistics.median(finite)}
    return out


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = doc["config"]
    table = [r for r in doc["records"] if r["kind"] == "table"]
    pre = next(r for r in table if r["row"].startswith("pretrained"))
    largest = next(r for r in table if r["row"] == "largest subnet")
    full_params = largest["parameters"]
    lines = [
        f"# SuperSAM subnets ({cfg['model']}, scale {cfg['scale']})\n",
        f"From `{source.name}` ({doc['created_utc']}, `{doc['command']}`); "
        f"{cfg['threads']} threads, device {cfg['device']}; whole run {doc['wall_s']:.0f} s.\n",
        f"Test data `{cfg['data']['test']}`; searches on `{cfg['data']['val']}` "
        f"({cfg['evaluations']} evaluations each, objective: mean of point and box mIoU). "
        "mIoU: per object, best of SAM's 3 masks for a point, the single mask for the exact box. "
        "Latency: the image encoder on one image, best of the interleaved rounds.\n",
        "| model | params (M) | % of full | encoder GFLOPs | latency (ms) | mIoU point | "
        "mIoU box | vs pretrained (point / box) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        if "skipped" in r:
            lines.append(f"| {r['row']} | - | - | - | - | - | - | no subnet: {r['skipped']} |")
            continue
        d_pt, d_box = r["miou_point"] - pre["miou_point"], r["miou_box"] - pre["miou_box"]
        lines.append(
            f"| {r['row']} | {r['parameters'] / 1e6:.3f} | {r['parameters'] / full_params:.1%} | "
            f"{fmt(r['encoder_gflops'], '.3f')} | {fmt(r.get('min_ms'), '.1f')} | {r['miou_point']:.3f} | "
            f"{r['miou_box']:.3f} | {d_pt:+.3f} / {d_box:+.3f} |"
        )
    lines += ["", claim_sentence(table, pre, largest, full_params), ""]
    # the search comparison
    curves = convergence(doc)
    reach = reach_summary(curves)
    budget = cfg["budgets"][0]
    if reach["target"] is not None:
        lines += [
            f"## OpenTuner versus random search (budget <= {budget:.0%} of the parameters)\n",
            f"Best validation score found by any run: {reach['target']:.4f}. Evaluations each "
            "run needed to reach it (- : not within its evaluations):\n",
            "| method | " + " | ".join(f"seed {s}" for s in cfg["seeds"]) + " | median |",
            "|---" * (len(cfg["seeds"]) + 2) + "|",
        ]
        for method, m in reach["methods"].items():
            cells = [str(m["per_seed"].get(s) or "-") for s in cfg["seeds"]]
            med = "-" if math.isinf(m["median"]) else f"{m['median']:g}"
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {med} |")
        ot, rs = (
            reach["methods"].get(k, {}).get("median", math.inf) for k in ("opentuner", "random")
        )
        verdict = "met" if ot < rs else "NOT met"
        lines.append(
            f"\nGoal (OpenTuner reaches the best configuration in fewer evaluations than random "
            f"search, median over {len(cfg['seeds'])} seeds; a run that never reaches it counts as "
            f"more than {cfg['evaluations']}): {verdict}. OpenTuner runs its default technique "
            "(the AUC-bandit ensemble AUCBanditMetaTechniqueA); its path also depends on the "
            "process's string hashing, so a rerun can differ. Every search scores subnets with "
            "the same validation prompts (--eval-seed 0), so scores compare across seeds.\n"
        )
    lines += [
        "## Figures\n",
        "- `pareto.png`: every evaluated subnet (parameters vs validation score), the Pareto "
        "front, the budgets and the search's picks",
        "- `convergence.png`: best validation score vs evaluations, OpenTuner and random search",
        "- `latency.png`: encoder latency vs parameters (Pareto-front subnets, largest, smallest)",
        "",
        "## Stages\n",
        "| stage | command | wall (s) | reused |",
        "|---|---|---|---|",
    ]
    for r in doc["records"]:
        if r["kind"] == "stage":
            lines.append(
                f"| {r['stage']} | `supersam {' '.join(r['argv'])}` | {r['wall_s']:.0f} | "
                f"{'yes (commit ' + str(r['git'].get('commit', '?'))[:7] + ')' if r['reused'] else 'no'} |"
            )
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(lines) + "\n")
    paths = [path]
    paths.append(_plot_pareto(plt, doc, out_dir / "pareto.png", full_params))
    paths.append(_plot_convergence(plt, curves, budget, out_dir / "convergence.png"))
    paths.append(_plot_latency(plt, doc, table, out_dir / "latency.png", full_params))
    return paths


def claim_sentence(table: list[dict], pre: dict, largest: dict, full_params: int) -> str:
    """Whether the paper's claim holds here, from the numbers: a subnet >= 30% smaller that scores
    >= the pretrained model and >= 97% of the trained largest subnet (both prompts)."""
    candidates = [r for r in table if "skipped" not in r and r["parameters"] <= 0.7 * full_params]
    good = [
        r
        for r in candidates
        if all(
            r[f"miou_{p}"] >= pre[f"miou_{p}"] and r[f"miou_{p}"] >= 0.97 * largest[f"miou_{p}"]
            for p in ("point", "box")
        )
    ]
    if not candidates:
        return "No subnet at least 30% smaller was evaluated, so the claim is untested here."
    best = max(good or candidates, key=lambda r: r["miou_box"] + r["miou_point"])
    detail = (
        f"{best['row']} ({best['parameters'] / full_params:.0%} of the parameters): point "
        f"{best['miou_point']:.3f} / box {best['miou_box']:.3f} against the pretrained model's "
        f"{pre['miou_point']:.3f} / {pre['miou_box']:.3f}, and "
        f"{best['miou_point'] / largest['miou_point']:.1%} / {best['miou_box'] / largest['miou_box']:.1%} "
        "of the trained largest subnet's"
    )
    if good:
        return (
            f"**The claim holds at this scale**: {len(good)} of the table's rows at least 30% smaller "
            f"match or beat the pretrained model with both prompts; the best is {detail}. "
            "Goal (>= pretrained and >= 97% of the largest subnet): met."
        )
    return (
        f"**The claim does not hold at this scale**: no subnet at least 30% smaller scores "
        f">= the pretrained model and >= 97% of the largest subnet with both prompts; the best "
        f"is {detail}. Goal: NOT met."
    )


def _finish(plt, fig, ax, path: Path) -> Path:
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_pareto(plt, doc, path, full_params):
    pts = {}
    for r in doc["records"]:
        if r["kind"] == "trial" and r.get("score") is not None:
            pts[json.dumps(r["subnet"])] = (r["parameters"] / full_params, r["score"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if pts:
        xs, ys = zip(*pts.values(), strict=True)
        ax.scatter(xs, ys, s=12, alpha=0.5, label="evaluated subnets")
        front = pareto_front(list(pts.values()))
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="k",
            lw=1,
            label="Pareto front",
        )
    picks = [
        r
        for r in doc["records"]
        if r["kind"] == "table" and r.get("budget") is not None and "skipped" not in r
    ]
    for r in picks:
        key = json.dumps(r.get("supernet_subnet"))
        if key in pts:
            ax.scatter(*pts[key], marker="*", s=160, color="C3", zorder=3)
            ax.annotate(
                f"pick <= {r['budget']:.0%}",
                pts[key],
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
            )
    for b in doc["config"]["budgets"]:
        ax.axvline(b, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("parameters (fraction of the full model)")
    ax.set_ylabel("validation score (mean of point and box mIoU)")
    ax.set_title("Subnets evaluated by all searches")
    return _finish(plt, fig, ax, path)


def _plot_convergence(plt, curves, budget, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (method, per) in enumerate(sorted(curves.items())):
        for j, (_, c) in enumerate(sorted(per.items())):
            ax.plot(
                range(1, len(c) + 1),
                c,
                color=f"C{i}",
                alpha=0.8,
                lw=1.2,
                label=method if j == 0 else None,
            )
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best validation score so far")
    ax.set_title(f"Search convergence, parameters <= {budget:.0%}; one line per seed")
    return _finish(plt, fig, ax, path)


def _plot_latency(plt, doc, table, path, full_params):
    lat = [r for r in doc["records"] if r["kind"] == "latency"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if lat:
        ax.scatter(
            [r["parameters"] / full_params for r in lat],
            [r["latency_ms"] for r in lat],
            s=18,
            label="Pareto-front subnets, largest, smallest",
        )
    for r in table:
        if "min_ms" in r:
            ax.scatter(r["parameters"] / full_params, r["min_ms"], marker="x", color="C3")
            ax.annotate(
                r["row"],
                (r["parameters"] / full_params, r["min_ms"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ax.set_xlabel("parameters (fraction of the full model)")
    ax.set_ylabel("image encoder latency (ms, best round)")
    ax.set_title("Latency versus size of extracted subnets")
    return _finish(plt, fig, ax, path)
