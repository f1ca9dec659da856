"""Subnet search under a size or latency budget (SuperSAM: a program autotuner, OpenTuner, searches
the trained supernet), and the random-search baseline it is compared with.

The space, as enumerated parameters: keep_<b> in {0, 1} for every removable block b, and width_<b>
in the space's widths plus the full hidden size for every block not fixed at full width. An
assignment maps to one SubnetConfig (a dropped block's width is ignored), so several assignments can
be the same subnet: results are cached by subnet.

Objective: the subnet's validation mIoU (by default the mean of the point and the box mIoU),
maximised, subject to a Budget: parameters, or the image encoder's measured latency, at most a
fraction of the full model's. A subnet over budget is rejected without an mIoU evaluation;
OpenTuner is told 1 + how far over budget it was (worse than any feasible subnet, and graded, so the
search is steered back), random search just draws again. Only mIoU evaluations of distinct feasible
subnets count against `evaluations`.

Both methods propose the smallest subnet first (within any parameter budget that any subnet fits),
so that a tight budget cannot leave a search without a feasible subnet.

The history of a search (every proposal and its verdict) is rewritten atomically after every
evaluation; resume=True reloads it, answers repeated subnets from it and counts its evaluations
(random search replays its stream exactly; OpenTuner is seeded with the subnets already evaluated).
Search on the validation split; the test split is for the final table only.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from harness.device import autocast
from supersam_min.analysis import best_so_far
from supersam_min.data import Sample
from supersam_min.evaluate import evaluate_prompts
from supersam_min.supernet import (
    SearchSpace,
    SubnetConfig,
    SuperSAM,
    extract,
    parameter_count,
    predicted_parameters,
)

METHODS = ("opentuner", "random")
# OpenTuner's own default: an AUC-bandit ensemble of differential evolution, greedy mutations and
# Nelder-Mead. In a pilot (tiny supernet, nuclei:val, 70% budget, 40 evaluations, 3 seeds) it reached
# the best subnet known in 2 of 3 seeds, greedy mutation alone (UniformGreedyMutation10) in 1 of 3,
# random search in none.
DEFAULT_TECHNIQUE = "AUCBanditMetaTechniqueA"
PROMPTS = ("both", "box", "point")


@dataclass(frozen=True)
class Budget:
    """Subnets may cost at most `fraction` of the full model's parameters or encoder latency."""

    kind: str = "params"
    fraction: float = 1.0

    def __post_init__(self):
        if self.kind not in ("params", "latency"):
            raise ValueError(f"unknown budget kind {self.kind!r}; choose params or latency")
        if not 0 < self.fraction <= 1:
            raise ValueError(
                f"budget fraction {self.fraction} must lie in (0, 1]: e.g. 0.7 for a subnet "
                "at most 70% of the full model (30% smaller)"
            )


def search_parameters(space: SearchSpace) -> dict[str, list[int]]:
    """OpenTuner's view of the space: {"keep_<b>": [0, 1], "width_<b>": [...]}."""
    params: dict[str, list[int]] = {f"keep_{b}": [0, 1] for b in space.removable}
    for b in range(space.depth):
        if b not in space.fixed_width:
            params[f"width_{b}"] = sorted({*space.widths, space.hidden})
    return params


def to_subnet(space: SearchSpace, values: dict) -> SubnetConfig:
    blocks = tuple(b for b in range(space.depth) if values.get(f"keep_{b}", 1))
    widths = tuple(values.get(f"width_{b}", space.hidden) for b in blocks)
    return SubnetConfig(blocks, widths)


def to_values(space: SearchSpace, cfg: SubnetConfig) -> dict:
    """An assignment of search_parameters that gives `cfg` (dropped blocks: the largest width)."""
    kept = dict(zip(cfg.blocks, cfg.mlp_widths, strict=True))
    values = {f"keep_{b}": int(b in kept) for b in space.removable}
    for b in range(space.depth):
        if b not in space.fixed_width:
            values[f"width_{b}"] = kept.get(b, space.hidden)
    return values


def encoder_gflops(sam, image_size: int) -> float:
    """GFLOPs (2 x multiply-adds, torch.utils.flop_counter) of the image encoder on one image."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=next(sam.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sam.image_encoder(x)
    return counter.get_total_flops() / 1e9


def encoder_latency_ms(sam, repeat: int = 5, precision: str = "fp32") -> float:
    """Best-of-`repeat` time (ms) of `sam`'s image encoder on one image at its input size, after
    a warm-up: CUDA events (L2 flushed) when the model is on a GPU, perf_counter on the CPU
    (precision bf16: under bf16 autocast, on CUDA)."""
    from harness import timing

    size = sam.image_encoder.img_size
    device = next(sam.parameters()).device
    x = torch.randn(1, 3, size, size, device=device)
    with torch.no_grad(), autocast(device, precision):
        if device.type == "cuda":
            return timing.measure_cuda(lambda: sam.image_encoder(x), 2, repeat).min_ms
        return timing.measure(lambda: sam.image_encoder(x), 1, repeat).min_ms


class Evaluator:
    """Size, latency and validation mIoU of subnets of a trained supernet, each cached.

    Latency: the image encoder of the extracted (really smaller) subnet on one image; the best of
    `latency_repeat` calls after a warm-up (CUDA events on a GPU, perf_counter on the CPU).
    mIoU: of the extracted subnet too, so `workers` > 1 can score several subnets at once (threads,
    each with its own copy; worker i on devices[i % len(devices)], e.g. one GPU each) with the very
    same results as one worker.
    """

    def __init__(
        self,
        sup: SuperSAM,
        samples: list[Sample],
        prompt: str = "both",
        seed: int = 0,
        latency_repeat: int = 5,
        workers: int = 1,
        devices: list[str | torch.device] | None = None,
        precision: str = "fp32",
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if prompt not in PROMPTS:
            raise ValueError(f"unknown prompt {prompt!r}; choose one of {', '.join(PROMPTS)}")
        if not any(len(s.masks) for s in samples):
            raise ValueError("the validation data has no object to segment")
        self.sup, self.samples, self.prompt, self.seed = sup, samples, prompt, seed
        self.latency_repeat, self.workers, self.precision = latency_repeat, workers, precision
        self.devices = [torch.device(d) for d in devices or [sup.sam.device]]
        self.full_params = parameter_count(sup.sam)
        self._latency: dict[SubnetConfig, float] = {}
        self._miou: dict[SubnetConfig, dict] = {}

    def params(self, cfg: SubnetConfig) -> int:
        return predicted_parameters(self.sup.sam, cfg)

    def latency_ms(self, cfg: SubnetConfig) -> float:
        if cfg not in self._latency:
            sam = extract(self.sup.sam, self.sup.model_name, cfg).eval()
            self._latency[cfg] = encoder_latency_ms(sam, self.latency_repeat, self.precision)
        return self._latency[cfg]

    def cost(self, cfg: SubnetConfig, budget: Budget) -> float:
        """The subnet's cost as a fraction of the full model's, in the budget's kind."""
        if budget.kind == "params":
            return self.params(cfg) / self.full_params
        return self.latency_ms(cfg) / self.latency_ms(self.sup.space.max_subnet())

    def miou(self, cfg: SubnetConfig) -> dict:
        """{"miou_box", "miou_point", "score"} on the validation samples (score: the objective)."""
        self.miou_many([cfg])
        return self._miou[cfg]

    def miou_many(self, cfgs: list[SubnetConfig]) -> None:
        """Score the subnets not yet scored, `workers` at a time."""
        todo = [c for c in dict.fromkeys(cfgs) if c not in self._miou]
        if self.workers == 1 or len(todo) <= 1:
            for cfg in todo:
                self._miou[cfg] = self._score(cfg, self.devices[0])
            return
        from concurrent.futures import ThreadPoolExecutor

        devices = [self.devices[i % len(self.devices)] for i in range(len(todo))]
        with ThreadPoolExecutor(self.workers) as pool:
            for cfg, out in zip(todo, pool.map(self._score, todo, devices), strict=True):
                self._miou[cfg] = out

    def _score(self, cfg: SubnetConfig, device: torch.device) -> dict:
        name = self.sup.model_name
        sub = SuperSAM(extract(self.sup.sam, name, cfg).to(device), name)
        kinds = tuple(k for k in ("box", "point") if self.prompt in (k, "both"))
        scores = evaluate_prompts(sub, self.samples, kinds, self.seed, self.precision)
        out = {f"miou_{kind}": scores[kind]["miou"] for kind in kinds}
        out["score"] = sum(out.values()) / len(out)
        return out

    def remember(self, trial: dict) -> None:
        """Preload the caches from a trial of an earlier (resumed) search."""
        cfg = SubnetConfig.from_dict(trial["subnet"])
        if trial.get("latency_ms") is not None:
            self._latency[cfg] = trial["latency_ms"]
        if trial.get("score") is not None:
            self._miou[cfg] = {
                k: trial[k] for k in ("miou_box", "miou_point", "score") if k in trial
            }


@dataclass
class SearchResult:
    method: str
    budget: Budget
    seed: int
    evaluations: int
    best: SubnetConfig | None
    best_score: float
    trials: list[dict]

    def convergence(self) -> list[float]:
        """The best score after each evaluation (index i: after i + 1 evaluations)."""
        return best_so_far([t["score"] for t in self.trials if t["evaluation"] is not None])


def _header(
    method: str, budget: Budget, seed: int, space: SearchSpace, technique: str | None
) -> dict:
    return {
        "method": method,
        "technique": technique,
        "budget": asdict(budget),
        "seed": seed,
        "space": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(space).items()},
    }


def search(
    evaluator: Evaluator,
    budget: Budget,
    method: str = "opentuner",
    evaluations: int = 50,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    max_proposals: int | None = None,
    technique: str | None = None,
) -> SearchResult:
    """Search the supernet's space for the best validation mIoU within `budget`.

    `technique`: OpenTuner's search technique by name (default DEFAULT_TECHNIQUE). One seed takes
    one path in every process (harness.tuner seeds OpenTuner's generators and keeps its
    differential evolution from drawing parents in the order of their memory addresses).
    Stops after `evaluations` mIoU evaluations or `max_proposals` proposals (default 20x
    evaluations: a budget few subnets fit). out_dir keeps trials.json (and OpenTuner's
    database, opentuner.db), which resume=True continues from.
    """
    if method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; choose one of {', '.join(METHODS)}")
    if evaluations < 1:
        raise ValueError(f"evaluations must be >= 1, got {evaluations}")
    space = evaluator.sup.space
    smallest = evaluator.cost(space.min_subnet(), budget)
    if budget.kind == "params" and smallest > budget.fraction:
        raise ValueError(
            f"no subnet fits the budget: the smallest has {smallest:.1%} of the full model's "
            f"parameters, more than {budget.fraction:.0%}; raise the budget"
        )
    if method == "random":
        technique = None
    else:
        technique = technique or DEFAULT_TECHNIQUE
    header = _header(method, budget, seed, space, technique)
    out_dir = Path(out_dir) if out_dir is not None else None
    trials: list[dict] = []
    if resume:
        trials = _load_history(out_dir, header)
        for t in trials:
            evaluator.remember(t)
    done = sum(t["evaluation"] is not None for t in trials)
    seen = {SubnetConfig.from_dict(t["subnet"]) for t in trials}
    max_proposals = max_proposals or 20 * evaluations
    started = time.perf_counter()
    bar = tqdm(
        total=evaluations, initial=done, desc=f"search {method}", disable=not progress, unit="eval"
    )

    def judge_all(cfgs: list[SubnetConfig]) -> list[float | None]:
        """The objective (to minimise) of each proposal, in order: new feasible subnets are scored
        together (up to the evaluations left; None for the proposals after that)."""
        costs = [evaluator.cost(c, budget) for c in cfgs]
        new = [c for c, k in zip(cfgs, costs, strict=True) if k <= budget.fraction]
        new = [c for c in dict.fromkeys(new) if c not in seen][: evaluations - done]
        evaluator.miou_many(new)
        out = []
        for cfg, cost in zip(cfgs, costs, strict=True):
            fresh = cost <= budget.fraction and cfg not in seen
            out.append(None if fresh and cfg not in new else judge(cfg, cost))
        return out

    def judge(cfg: SubnetConfig, cost: float) -> float:
        """Record one proposal (scored already if feasible); its objective."""
        nonlocal done
        trial = {
            "proposal": len(trials),
            "subnet": cfg.to_dict(),
            "parameters": evaluator.params(cfg),
            "cost": cost,
            "feasible": cost <= budget.fraction,
            "evaluation": None,
            "cached": cfg in seen,
        }
        if budget.kind == "latency":
            trial["latency_ms"] = evaluator.latency_ms(cfg)
        if not trial["feasible"]:
            value = 1 + cost - budget.fraction
        else:
            fresh = cfg not in seen
            trial.update(evaluator.miou(cfg))
            if fresh:
                done += 1
                trial["evaluation"] = done
                bar.update()
            value = 1 - trial["score"]
        seen.add(cfg)
        trial["elapsed_s"] = time.perf_counter() - started
        trials.append(trial)
        return value

    def save() -> None:
        if out_dir is not None:
            _save_history(out_dir, header, trials)

    proposals = 0
    try:
        if method == "random":
            rng = random.Random(f"search-random-{seed}")
            params = search_parameters(space)
            if space.min_subnet() not in seen:  # the common start (see the module docstring)
                judge_all([space.min_subnet()])
                proposals += 1
                save()
            while done < evaluations and proposals < max_proposals:
                batch: list[SubnetConfig] = []
                while len(batch) < evaluator.workers and proposals < max_proposals:
                    cfg = to_subnet(space, {k: rng.choice(v) for k, v in params.items()})
                    proposals += 1
                    if cfg not in seen and cfg not in batch:  # repeats cost and count nothing
                        batch.append(cfg)
                judge_all(batch)
                save()
        else:
            from harness.tuner import OpenTunerLoop

            start = [] if space.min_subnet() in seen else [space.min_subnet()]
            evaluated = [
                to_values(space, cfg)
                for cfg in start
                + [SubnetConfig.from_dict(t["subnet"]) for t in trials if t["evaluation"]]
            ]
            with OpenTunerLoop(
                search_parameters(space),
                out_dir / "opentuner.db" if out_dir is not None else None,
                "supersam",
                f"{evaluator.sup.model_name}-{budget.kind}-{budget.fraction}",
                seed=seed,
                parallelism=evaluator.workers,
                seeds=evaluated,
                technique=technique,
            ) as tuner:
                while done < evaluations and proposals < max_proposals:
                    batch = tuner.ask()
                    proposals += 1 if not batch else len(batch)
                    values = judge_all([to_subnet(space, v) for _, v in batch])
                    for (handle, _), value in zip(batch, values, strict=True):
                        if value is not None:  # None: left once the evaluations ran out
                            tuner.tell(handle, value)
                    save()
    finally:
        bar.close()
        save()
    feasible = [t for t in trials if t["feasible"]]
    best = max(feasible, key=lambda t: t["score"], default=None)
    return SearchResult(
        method=method,
        budget=budget,
        seed=seed,
        evaluations=done,
        best=SubnetConfig.from_dict(best["subnet"]) if best else None,
        best_score=best["score"] if best else -math.inf,
        trials=trials,
    )


def _save_history(out_dir: Path, header: dict, trials: list[dict]) -> None:
    from harness.results import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "trials.json", json.dumps({**header, "trials": trials}, indent=1))


def _load_history(out_dir: Path | None, header: dict) -> list[dict]:
    if out_dir is None or not (out_dir / "trials.json").is_file():
        raise FileNotFoundError(f"resume: no trials.json in {out_dir} to continue from")
    doc = json.loads((out_dir / "trials.json").read_text())
    differs = [k for k in header if doc.get(k) != header[k]]
    if differs:
        raise ValueError(
            f"resume: {out_dir / 'trials.json'} is a search with another {', '.join(differs)}; "
            "resume with the same settings, or search into a new folder"
        )
    return doc["trials"]


def evaluations_to_reach(result: SearchResult, target: float) -> int | None:
    """How many evaluations `result` needed to first score >= target (None: never)."""
    for i, best in enumerate(result.convergence(), start=1):
        if best >= target:
            return i
    return None
