"""SuperSAM speed goals on CPU: extracted subnets are really faster, and a sandwich step costs about
as much as its subnets' forward/backward passes.

  * encoder time of the full model and of extracted subnets (sam_tiny at 256 px; ViT-B at 1024 px,
    random weights: time does not depend on their values), with parameter counts;
  * one sandwich step with k subnets against one step of the largest subnet alone (sam_tiny,
    nuclei training tiles).
"""

from __future__ import annotations

import functools
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from harness import environment, results, timing
from supersam_min.build import build
from supersam_min.data import nuclei_split
from supersam_min.supernet import SuperSAM, parameter_count
from supersam_min.train import TrainConfig, make_batch, sandwich_step, trainable_parameters

EXPERIMENT = "supersam-speed"
SCALES = {
    "quick": {
        "models": {"sam_tiny": 256, "vit_b": 1024},
        "repeat": 3,
        "random_subnets": 2,
        "n_random": 1,
    },
    "smoke": {"models": {"sam_tiny": 256}, "repeat": 1, "random_subnets": 1, "n_random": 1},
}


# the `repro run` options this experiment takes besides --scale, --results-dir and --no-progress
OPTIONS = ("threads", "seed")


def run(
    scale: str = "quick",
    threads: int | None = None,
    results_dir: Path | None = None,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    cfg = SCALES[scale]
    started = time.perf_counter()
    records = []
    with timing.threads(threads) as n_threads, torch.no_grad():
        for model, size in tqdm(cfg["models"].items(), desc=EXPERIMENT, disable=not progress):
            torch.manual_seed(seed)
            sup = SuperSAM(build(model), model)
            rng = random.Random(seed)
            subnets = {
                "max": sup.space.max_subnet(),
                "min": sup.space.min_subnet(),
                **{f"random{i}": sup.space.sample(rng) for i in range(cfg["random_subnets"])},
            }
            image = torch.randn(1, 3, size, size)
            full_params = parameter_count(sup.sam.image_encoder)
            encoders = {
                name: sup.get_active_subnet(sub_cfg).image_encoder.eval()
                for name, sub_cfg in subnets.items()
            }
            timings = timing.measure_interleaved(  # rounds over all subnets: noise hits all alike
                {name: functools.partial(enc, image) for name, enc in encoders.items()},
                warmup=1,
                repeat=cfg["repeat"],
            )
            for name, sub_cfg in subnets.items():
                encoder, t = encoders[name], timings[name]
                records.append(
                    {
                        "kind": "encoder",
                        "model": model,
                        "subnet": name,
                        "blocks": list(sub_cfg.blocks),
                        "mlp_widths": list(sub_cfg.mlp_widths),
                        "encoder_parameters": parameter_count(encoder),
                        "encoder_param_fraction": parameter_count(encoder) / full_params,
                        **t.as_dict(),
                    }
                )
    # training-step cost, sam_tiny on the nuclei training tiles
    with timing.threads(threads):
        torch.manual_seed(seed)
        sup = SuperSAM(build("sam_tiny"), "sam_tiny")
        opt = torch.optim.AdamW(trainable_parameters(sup), lr=1e-5)
        tcfg = TrainConfig(batch_size=2, max_masks=8)
        batch = make_batch(nuclei_split("train"), tcfg, random.Random(seed))
        kinds = {"largest_only": False, "sandwich": True}
        steps = {
            label: functools.partial(
                sandwich_step,
                sup,
                batch,
                opt,
                random.Random(seed),
                cfg["n_random"],
                False,
                True,
                sandwich,
            )
            for label, sandwich in kinds.items()
        }
        timings = timing.measure_interleaved(steps, warmup=1, repeat=cfg["repeat"])
        for label, sandwich in kinds.items():
            records.append(
                {
                    "kind": "train_step",
                    "model": "sam_tiny",
                    "subnet": label,
                    "subnets_per_step": 2 + cfg["n_random"] if sandwich else 1,
                    **timings[label].as_dict(),
                }
            )
    return results.write_run(
        EXPERIMENT,
        config={"scale": scale, **cfg, "threads": n_threads, "seed": seed},
        environment=environment.capture(n_threads),
        records=records,
        results_dir=results_dir,
        timing_method=timing.method(warmup=1, repeat=cfg["repeat"]),
        extra={"wall_s": time.perf_counter() - started},
    )


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    enc = [r for r in doc["records"] if r["kind"] == "encoder"]
    steps = {r["subnet"]: r for r in doc["records"] if r["kind"] == "train_step"}
    lines = [
        f"# SuperSAM speed on CPU ({doc['config']['threads']} threads)\n",
        f"From `{source.name}` ({doc['created_utc']}, `{doc['command']}`).\n",
        "## Encoder time of extracted subnets (median of the timed calls)\n",
        "| model | subnet | blocks | encoder params (M) | % of full | time (ms) | % of full |",
        "|---|---|---|---|---|---|---|",
    ]
    goal_rows = []
    for r in enc:
        full = next(x for x in enc if x["model"] == r["model"] and x["subnet"] == "max")
        frac_t = r["time_ms"] / full["time_ms"]
        lines.append(
            f"| {r['model']} | {r['subnet']} | {len(r['blocks'])} | "
            f"{r['encoder_parameters'] / 1e6:.2f} | {r['encoder_param_fraction']:.0%} | "
            f"{r['time_ms']:.1f} | {frac_t:.0%} |"
        )
        if r["encoder_param_fraction"] <= 0.5:
            goal_rows.append((r, frac_t))
    lines.append(
        "\nGoal: a subnet with <= 50% of the encoder's parameters runs the encoder in <= 60% "
        "of the full encoder's time."
    )
    for r, frac_t in goal_rows:
        lines.append(
            f"- {r['model']} {r['subnet']}: {r['encoder_param_fraction']:.0%} of the "
            f"parameters, {frac_t:.0%} of the time -> {'met' if frac_t <= 0.6 else 'NOT met'}"
        )
    if not goal_rows:
        lines.append("- no measured subnet has <= 50% of the parameters")
    if {"largest_only", "sandwich"} <= steps.keys():
        k = steps["sandwich"]["subnets_per_step"]
        ratio = steps["sandwich"]["time_ms"] / steps["largest_only"]["time_ms"]
        lines += [
            "\n## Sandwich step cost (sam_tiny, batch 2)\n",
            f"Largest subnet alone: {steps['largest_only']['time_ms']:.0f} ms; sandwich step "
            f"with k = {k} subnets: {steps['sandwich']['time_ms']:.0f} ms = {ratio:.2f} x. "
            f"Goal <= (k + 0.5) = {k + 0.5} x -> {'met' if ratio <= k + 0.5 else 'NOT met'} "
            "(smaller subnets are cheaper than the largest, so the cost is usually below k).",
        ]
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(lines) + "\n")
    return [path]
