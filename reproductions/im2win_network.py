"""im2win in whole networks at inference: torchvision models with every convolution im2win can run
swapped for im2win's, side by side with PyTorch's NCHW path, a channels_last network and that
network compiled with its weights frozen (im2win.nn.NETWORK_FORMS).

Random weights (a network's time does not depend on their values), batch 1, under
torch.inference_mode(). Every form of one network is timed in the same interleaved rounds
(harness.timing.measure_interleaved), so a burst of machine noise hits all of them alike, and each
form's output is checked against the stock model's before it is timed.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from harness import environment, results, timing
from im2win.nn import NETWORK_FORMS, prepare
from reproductions.tables import fmt, table

EXPERIMENT = "im2win-network"
SCALES = {
    "quick": {"networks": ["resnet18", "alexnet", "vgg11"], "size": 224, "warmup": 3, "repeat": 30},
    "smoke": {"networks": ["resnet18"], "size": 64, "warmup": 1, "repeat": 2},
}
PEERS = ("torch_cl_net", "torch_compiled")  # the PyTorch forms im2win's are set against
TOLERANCE = 1e-3  # of the stock output's largest magnitude: folding and fusing reorder the sums

# the `repro run` options this experiment takes besides --scale, --results-dir and --no-progress
OPTIONS = ("threads", "seed")


def _forward(model, x) -> None:
    with torch.inference_mode():
        model(x)


def _made(form: str, stock, x, reference) -> tuple[dict, Callable[[], None] | None]:
    """`stock` made into `form` (a copy) and checked against its output `reference`: what to
    record (prepare_s, max_abs_error; or error, why it is not timed) and the forward pass to time
    (None where it is not). A form that fails to build, or whose output differs from the stock
    model's by more than TOLERANCE of its largest value, is recorded with the reason, and the
    run goes on with the others (torch.compile, for one, needs a working C++ toolchain)."""
    begun = time.perf_counter()
    try:
        model, xi = prepare(copy.deepcopy(stock), x, form)
        with torch.inference_mode():
            error = (model(xi) - reference).abs().max().item()
    except Exception as exc:  # noqa: BLE001 - any failure of a form is recorded, not raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"error": f"{type(exc).__name__}: {first}"[:300]}, None
    largest = reference.abs().max().item()
    if not error <= TOLERANCE * largest:
        why = f"output differs from the stock model's by {error:.3g} (largest value {largest:.3g})"
        return {"max_abs_error": error, "error": why}, None
    made = {"prepare_s": time.perf_counter() - begun, "max_abs_error": error}
    return made, functools.partial(_forward, model, xi)


def run(
    scale: str = "quick",
    threads: int | None = None,
    results_dir: Path | None = None,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    import torchvision

    cfg = SCALES[scale]
    started = time.perf_counter()
    records = []
    steps = tqdm(
        total=len(cfg["networks"]) * (len(NETWORK_FORMS) + 1), desc=EXPERIMENT, disable=not progress
    )
    with timing.threads(threads) as n_threads:
        for network in cfg["networks"]:
            torch.manual_seed(seed)
            stock = getattr(torchvision.models, network)(weights=None).eval()
            x = torch.randn(1, 3, cfg["size"], cfg["size"])
            with torch.inference_mode():
                reference = stock(x)
            calls, made = {}, {}
            for form in NETWORK_FORMS:
                steps.set_postfix_str(f"{network} {form}")
                made[form], call = _made(form, stock, x, reference)
                if call is not None:
                    calls[form] = call
                steps.update()
            steps.set_postfix_str(f"{network} timing")
            timings = timing.measure_interleaved(calls, warmup=cfg["warmup"], repeat=cfg["repeat"])
            steps.update()
            for form in NETWORK_FORMS:
                records.append(
                    {
                        "network": network,
                        "form": form,
                        "image_size": cfg["size"],
                        "max_output": reference.abs().max().item(),
                        **made[form],
                        **(timings[form].as_dict() if form in timings else {}),
                    }
                )
            del calls, stock
    steps.close()
    return results.write_run(
        EXPERIMENT,
        config={
            "scale": scale,
            **cfg,
            "forms": list(NETWORK_FORMS),
            "threads": n_threads,
            "seed": seed,
        },
        environment=environment.capture(n_threads),
        records=records,
        results_dir=results_dir,
        timing_method=timing.method(warmup=cfg["warmup"], repeat=cfg["repeat"]),
        extra={"wall_s": time.perf_counter() - started},
    )


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg, env = doc["config"], doc["environment"]
    networks = list(dict.fromkeys(r["network"] for r in doc["records"]))
    forms = list(dict.fromkeys(r["form"] for r in doc["records"]))
    by = {(r["network"], r["form"]): r for r in doc["records"]}
    git = env.get("git", {})
    lines = [
        f"# im2win in whole networks ({cfg['scale']} scale)\n",
        f"Rendered from `results/raw/{EXPERIMENT}/{source.name}`, measured {doc['created_utc']} "
        f"with `{doc['command']}` on {environment.describe_cpu(env)}, {cfg['threads']} threads, "
        f"torch {env['packages'].get('torch')}, commit {str(git.get('commit'))[:12]}"
        f"{' (dirty)' if git.get('dirty') else ''}. Run time {doc.get('wall_s', float('nan')):.0f} "
        "s.\n",
        f"Random weights, batch 1, {cfg['size']} x {cfg['size']} images, under "
        "torch.inference_mode(); each form made by `im2win.nn.prepare` (torch: the model as it is; "
        "torch_cl_net: it and its input in channels_last memory; torch_compiled: that network "
        "compiled by torch.compile with its weights frozen, batch norms folded and pointwise ops "
        "fused into oneDNN's convolutions; im2win_unpacked: every convolution im2win runs swapped "
        "for it, keeping no packed weights; im2win: as `im2win.nn.convert` leaves it, its weights "
        "packed once; im2win_folded: the batch norms folded into the convolutions first). Every "
        "form's output matched the stock model's within "
        f"{TOLERANCE:g} of its largest value before it was timed. {doc['timing_method']}.\n",
        "## Time of a forward pass\n",
        "ms, best round (median round).\n",
    ]

    def timed(network: str, form: str) -> dict | None:
        r = by.get((network, form))
        return r if r is not None and r.get("min_ms") is not None else None

    rows = [
        [network]
        + [
            f"{fmt(r['min_ms'], '.1f')} ({fmt(r['time_ms'], '.1f')})"
            if (r := timed(network, f))
            else "n/a"
            for f in forms
        ]
        for network in networks
    ]
    lines.append(table(["network", *forms], rows))
    failed = [r for r in doc["records"] if r.get("error")]
    if failed:
        lines.append("Not timed (n/a above):\n")
        lines += [f"- {r['network']} as {r['form']}: {r['error']}" for r in failed]
        lines.append("")
    im2win_forms = [f for f in forms if f.startswith("im2win")]
    peers = [p for p in PEERS if p in forms]
    if im2win_forms and peers:
        lines += [
            "## im2win's forms against PyTorch's strongest\n",
            "The peer's best time over the im2win form's best time (above 1: im2win faster).\n",
        ]
        header = ["network"] + [f"{f} vs {p}" for f in im2win_forms for p in peers]
        rows = [
            [network]
            + [
                fmt(timed(network, p)["min_ms"] / timed(network, f)["min_ms"], ".2f")
                if timed(network, f) and timed(network, p)
                else "n/a"
                for f in im2win_forms
                for p in peers
            ]
            for network in networks
        ]
        lines.append(table(header, rows))
    lines += [
        "## Preparing each form\n",
        "Seconds to make the form (torch_compiled: compiling, on its first call) and its largest "
        "difference from the stock model's output.\n",
    ]
    rows = [
        [
            network,
            f,
            fmt(by[network, f].get("prepare_s"), ".1f"),
            fmt(by[network, f].get("max_abs_error"), ".2e"),
        ]
        for network in networks
        for f in forms
        if (network, f) in by
    ]
    lines.append(table(["network", "form", "prepare s", "largest difference"], rows))
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(lines))
    return [path]
