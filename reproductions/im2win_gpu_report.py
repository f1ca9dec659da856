"""The tables of `repro run im2win-gpu`, drawn from its raw file on any machine: TFLOPS of im2win
and its peers beside the same-shape cuBLAS SGEMM (the roofline), every cuDNN engine with its
workspace, peak memory, the ablation, the paper against ours, and the issue's goals."""

from __future__ import annotations

from pathlib import Path

from harness import results
from im2win.cuda.tuned import architecture_default, no_default_reason
from im2win.metrics import FLOAT32_BYTES, window_transform_elems
from im2win.shapes import ConvShape
from reproductions.im2win_gpu_fused import fused_table
from reproductions.tables import against, fmt, geomean, grid, ratio, table

# The authors' logs (log/log_float_GPU_TFLOPS.txt), in their unit: MACs / time = half of 2*MACs/time.
PAPER_TFLOPS_MACS = {
    "conv1": (3.023, 4.459, 8.018),
    "conv2": (3.045, 5.581, 7.692),
    "conv3": (3.118, 4.629, 3.764),
    "conv4": (6.854, 9.979, 13.025),
    "conv5": (3.788, 19.269, 14.503),
    "conv6": (3.827, 10.124, 9.979),
    "conv7": (0.745, 1.653, 1.299),
    "conv8": (6.247, 9.467, 12.025),
    "conv9": (2.048, 6.417, 7.297),
    "conv10": (3.334, 11.599, 11.976),
    "conv11": (1.685, 15.571, 12.386),
    "conv12": (0.907, 7.089, 7.641),
}
"""(im2col+cuBLAS, cuDNN, im2win) per layer, as logged by the authors (MACs / s, in T)."""

LEGACY_IDS = {"im2col_cublas": "im2col_gemm_loop", "cudnn": "torch"}  # raw files before 2026-12
IM2COL = ("im2col_gemm", "im2col_gemm_loop")
# cuDNN ran an implicit-GEMM-type algorithm on these at batch 128 on an H100, FFT on the others
GEMM_TYPE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv7", "conv8", "conv9", "conv12")


def _best(tf: dict, correct: dict, layer: str, impls: list[str]) -> tuple[str | None, float | None]:
    """The fastest of `impls` on `layer` whose output passed the FP32 check."""
    ok = [(tf[(layer, i)], i) for i in impls if tf.get((layer, i)) and correct.get((layer, i))]
    return (max(ok)[1], max(ok)[0]) if ok else (None, None)


def _default_line(doc: dict) -> str:
    """The variant this run makes the architecture's default (im2win.cuda.tuned)."""
    chosen = architecture_default(doc)
    if chosen is None:
        return (
            "The architecture's default (`python -m im2win.cuda.tuned`): none from this run: "
            f"{no_default_reason(doc)}.\n"
        )
    name, mean, measured = chosen
    return (
        f"The architecture's default that `python -m im2win.cuda.tuned` takes from this run, for "
        f"every shape no search has tuned: {name}, at {mean:.2f}x the speed of each layer's "
        f"fastest variant (geometric mean over {len(measured)} layers).\n"
    )


def render(doc: dict, source: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in doc["records"]:
        r["impl"] = LEGACY_IDS.get(r["impl"], r["impl"])
    layers, impls, tf = grid(doc, "tflops")
    _, _, mem = grid(doc, "peak_mem_bytes")
    _, _, formula = grid(doc, "analytic_mem_bytes")
    _, _, correct = grid(doc, "correct")
    _, _, workspace = grid(doc, "workspace_bytes")
    _, _, skipped = grid(doc, "skipped")
    _, _, failed = grid(doc, "failed")
    _, _, split = grid(doc, "split_k")
    _, _, tile_source = grid(doc, "tile_source")
    engines = [i for i in impls if i.startswith("cudnn_") and i != "cudnn_engines"]
    cudnn_all = ["torch", *engines]
    main = [i for i in impls if not i.startswith(("im2win_", "cudnn_")) and i != "sgemm"]

    def cell(layer: str, impl: str) -> str:
        return "failed" if failed.get((layer, impl)) else fmt(tf.get((layer, impl)), ".2f")

    ablation = [i for i in impls if i == "im2win" or i.startswith("im2win_")]
    gpu = (doc["environment"].get("gpu") or {}).get("name", "unknown GPU")
    mib = lambda v: fmt(None if v is None else v / 2**20, ".1f")  # noqa: E731
    best_cudnn = {l: _best(tf, correct, l, cudnn_all) for l in layers}
    best_im2col = {l: _best(tf, correct, l, [i for i in IM2COL if i in impls]) for l in layers}
    rows = []
    for l in layers:
        im, sg = tf.get((l, "im2win")), tf.get((l, "sgemm"))
        name, cu = best_cudnn[l]
        rows.append(
            [l]
            + [cell(l, i) for i in main]
            + [f"{fmt(cu, '.2f')} ({name or '-'})", cell(l, "sgemm")]
            + [
                fmt(ratio(im, sg), ".2f"),
                fmt(ratio(im, cu), ".2f"),
            ]
        )
    gm = {i: geomean(tf.get((l, i)) for l in layers) for i in [*main, "sgemm"]}
    gm_cudnn = geomean(best_cudnn[l][1] for l in layers)
    rows.append(
        ["**geomean**"]
        + [fmt(gm[i], ".2f") for i in main]
        + [fmt(gm_cudnn, ".2f"), fmt(gm["sgemm"], ".2f")]
        + [
            fmt(
                geomean(ratio(tf.get((l, "im2win")), tf.get((l, "sgemm"))) for l in layers),
                ".2f",
            ),
            fmt(
                geomean(ratio(tf.get((l, "im2win")), best_cudnn[l][1]) for l in layers),
                ".2f",
            ),
        ]
    )
    parts = [
        f"# im2win on {gpu} ({doc['config']['scale']} scale, batch {doc['config']['batch']})\n",
        f"From `{source.name}` ({doc['created_utc']}, `{doc['command']}`). {doc['timing_method']}.\n",
        *(
            [
                "**Interrupted** (time limit or Ctrl-C): not measured: "
                f"{', '.join(doc['config']['interrupted_before'])}.\n"
            ]
            if doc["config"].get("interrupted_before")
            else []
        ),
        *(
            [f"Stopped: {doc['config']['stopped_by']}.\n"]
            if doc["config"].get("stopped_by")
            else []
        ),
        "## TFLOPS (2 x MACs / best time)\n",
        "best cuDNN: the fastest of PyTorch's choice (`torch`, benchmark mode) and every cuDNN "
        "engine run on its own whose output passed the FP32 check; sgemm: one cuBLAS SGEMM of the "
        "layer's implicit-GEMM shape (M = N*P*Q, N = K, depth C*R*S), the roofline.\n",
        table(
            [
                "layer",
                *main,
                "best cuDNN (engine)",
                "sgemm",
                "im2win / sgemm",
                "im2win / best cuDNN",
            ],
            rows,
        ),
    ]
    if engines or any(r["impl"] == "cudnn_engines" for r in doc["records"]):
        parts += [
            "## cuDNN engines one by one (TFLOPS; workspace MiB)\n",
            _engine_table(layers, engines, tf, correct, workspace, skipped, failed, doc, mib),
        ]
    parts += _phase_table(doc, layers, tf)
    parts += _window_alone_table(doc, layers)
    parts += fused_table(layers, tf, correct)
    parts += [
        "## Peak memory per call (MiB: output + workspace), measured (formula)\n",
        table(
            ["layer", *main],
            [
                [l] + [f"{mib(mem.get((l, i)))} ({mib(formula.get((l, i)))})" for i in main]
                for l in layers
            ],
        ),
        "## Ablation (TFLOPS)\n",
        "im2win's tile: DEFAULT, one tuned for the layer (local: this machine's search or run; "
        "shipped: the package's), or the architecture's default, a run's fastest variant over all "
        "of its layers (local or shipped (architecture)); split-K: the slices of the reduction it "
        "ran with, more than 1 where its tiles "
        "could not fill the GPU's block slots (both recorded since 2026-12-02). A variant ending "
        "in _cl reads a channels_last copy of x, made before timing (the others read x NCHW).\n",
        table(
            ["layer", *ablation, "im2win tile", "im2win split-K"],
            [
                [l]
                + [cell(l, i) for i in ablation]
                + [tile_source.get((l, "im2win")) or "n/a", fmt(split.get((l, "im2win")), "d")]
                for l in layers
            ],
        ),
        _default_line(doc),
        "## Paper versus ours\n",
        "The authors' logs count MACs / time; converted here to 2 x MACs / time (x2). Their GPU is "
        "not named, and their batch is 128: compare only a paper-scale run.\n",
        table(
            [
                "layer",
                "paper cuBLAS",
                "ours im2col_gemm",
                "paper cuDNN",
                "ours torch (cuDNN)",
                "paper im2win",
                "ours im2win",
            ],
            [
                [l]
                + [
                    x
                    for pair in zip(
                        (fmt(2 * p, ".2f") for p in PAPER_TFLOPS_MACS[l]),
                        (fmt(tf.get((l, i)), ".2f") for i in ("im2col_gemm", "torch", "im2win")),
                        strict=True,
                    )
                    for x in pair
                ]
                for l in layers
                if l in PAPER_TFLOPS_MACS
            ],
        ),
        "\nAll outputs of the convolutions checked against float64 conv2d on the first image: "
        + (
            "every one within the FP32 bound."
            if all(
                r.get("correct", True) for r in doc["records"] if not r["impl"].startswith("cudnn_")
            )
            else "SOME FAIL the FP32 bound (see max_error_ratio in the raw file)."
        )
        + "\n",
        *_goals(layers, tf, mem, best_cudnn, best_im2col),
        *_failures(doc),
    ]
    path = out_dir / "README.md"
    results.atomic_write(path, "\n".join(parts))
    return [path]


PHASES = {  # the kernels of im2win.cuda.runtime.conv2d, in launch order
    "im2win_window": "window transform",
    "im2win_filter": "filter reorder",
    "im2win_conv": "convolution",
    "splitk_reduce": "split-K sum",
}


def _phase_table(doc: dict, layers: list[str], tf: dict) -> list[str]:
    """Where im2win's time goes: each kernel's best ms (runs since 2026-12-04 record them), their
    sum against the whole call's best, the window transform's bandwidth (the input read once and
    the window tensor written, over its time), and the convolution kernel alone in TFLOPS and
    against the same-shape SGEMM."""
    im2win = {r["layer"]: r for r in doc["records"] if r.get("impl") == "im2win"}
    rows = []
    for l in layers:
        r = im2win.get(l, {})
        ph = r.get("phases_ms")
        if not ph:
            continue
        conv_tf = r["flops"] / (ph["im2win_conv"] * 1e-3) / 1e12 if ph.get("im2win_conv") else None
        rows.append(
            [l]
            + [fmt(ph.get(k), ".3f") for k in PHASES]
            + [fmt(sum(ph.values()), ".3f"), fmt(r.get("min_ms"), ".3f")]
            + [fmt(_window_tbps(r, ph.get("im2win_window")), ".2f")]
            + [fmt(conv_tf, ".2f"), fmt(ratio(conv_tf, tf.get((l, "sgemm"))), ".2f")]
        )
    if not rows:
        return []
    return [
        "## Where im2win's time goes (ms at best, per kernel)\n",
        "Each kernel of one im2win call between CUDA events of its own, timed as the whole call "
        "(L2 flushed before each call); the rest of the whole call's time is the host's launches "
        "and allocations. The window transform's bandwidth: the input read once and the window "
        "tensor written (4 bytes a float each), over its time. The convolution kernel alone in "
        "TFLOPS, and against the SGEMM of the same shape.\n",
        table(
            [
                "layer",
                *PHASES.values(),
                "kernels",
                "whole call",
                "transform TB/s",
                "convolution TFLOPS",
                "conv / sgemm",
            ],
            rows,
        ),
    ]


def _window_alone_table(doc: dict, layers: list[str]) -> list[str]:
    """The window transform on its own: im2win_window, the kernel up to c72bc28 and a copy of as
    many bytes (runs since 2026-12-04 record them)."""
    im2win = {r["layer"]: r for r in doc["records"] if r.get("impl") == "im2win"}
    rows = []
    for l in layers:
        r = im2win.get(l, {})
        if not any(f"{k}_ms" in r or f"{k}_failed" in r for k in WINDOW_ALONE):
            continue
        cells = []
        for k in WINDOW_ALONE:
            ms = r.get(f"{k}_ms")
            cells.append(
                "failed"
                if f"{k}_failed" in r
                else f"{fmt(ms, '.3f')} ({fmt(_window_tbps(r, ms), '.2f')})"
            )
        speedup = ratio(r.get("window_rows_ms"), r.get("window_ms"))
        of_copy = ratio(r.get("window_copy_ms"), r.get("window_ms"))
        rows.append([l, *cells, fmt(speedup, ".2f"), fmt(of_copy, ".2f")])
    if not rows:
        return []
    return [
        "## The window transform on its own (ms at best, TB/s)\n",
        "Each timed as the whole call is (L2 flushed before each call): im2win_window, the kernel "
        "conv2d runs (a block an output row's tile of window rows x channels x columns); "
        "im2win_window_rows, the kernel up to c72bc28 (a block one window row's 32 x 32 tile); and "
        "a device-to-device copy that reads and writes as many bytes as the transform (the input "
        "once and the window tensor), its roofline. TB/s as in the table above.\n",
        table(
            [
                "layer",
                "im2win_window",
                "c72bc28's kernel",
                "copy",
                "speedup over c72bc28's",
                "of the copy's speed",
            ],
            rows,
        ),
    ]


WINDOW_ALONE = ("window", "window_rows", "window_copy")


def _window_tbps(record: dict, ms: float | None) -> float | None:
    """TB/s of the window transform: its input read once and its window tensor written."""
    if not ms:
        return None
    floats = window_transform_elems(ConvShape.from_dict(record))
    return floats * FLOAT32_BYTES / (ms * 1e-3) / 1e12


def _failures(doc: dict) -> list[str]:
    """The measurements that raised, each with its error (a failed one is "failed" in the tables
    and counts as missing in the goals)."""
    failed = [r for r in doc["records"] if r.get("failed")]
    if not failed:
        return []
    return [
        "## Failed measurements\n",
        table(
            ["layer", "impl", "error"],
            [[r["layer"], r["impl"], r["failed"].replace("|", "\\|")] for r in failed],
        ),
    ]


def _engine_table(layers, engines, tf, correct, workspace, skipped, failed, doc, mib) -> str:
    missing = [r for r in doc["records"] if r["impl"] == "cudnn_engines"]
    if missing and not engines:
        reason = missing[0].get("skipped") or f"failed: {missing[0].get('failed')}"
        return f"Not measured: {reason}\n"
    rows = []
    for l in layers:
        cells = []
        for e in engines:
            if skipped.get((l, e)):
                cells.append(f"n/a: {skipped[(l, e)][:60]}")
            elif failed.get((l, e)) or failed.get((l, "cudnn_engines")):
                cells.append("failed")
            elif (l, e) not in tf:
                cells.append("-")
            else:
                note = "" if correct.get((l, e)) else " NOT FP32"
                cells.append(f"{fmt(tf[(l, e)], '.2f')}; {mib(workspace.get((l, e)))}{note}")
        rows.append([l, *cells])
    return table(["layer", *engines], rows)


def _goals(layers, tf, mem, best_cudnn, best_im2col) -> list[str]:
    im = {l: tf.get((l, "im2win")) for l in layers}
    vs_sgemm = geomean(ratio(im[l], tf.get((l, "sgemm"))) for l in layers)
    vs_cudnn = {l: ratio(im[l], best_cudnn[l][1]) for l in layers}
    vs_im2col = geomean(ratio(im[l], best_im2col[l][1]) for l in layers)
    gemm_layers = [l for l in layers if l in GEMM_TYPE_LAYERS and vs_cudnn[l]]
    mem_ok = all(
        mem.get((l, "im2win")) is not None
        and all(mem.get((l, i)) is None or mem[(l, "im2win")] <= mem[(l, i)] for i in IM2COL)
        for l in layers
    )

    def verdict(ok):
        return "met" if ok else "NOT met"

    overall = geomean(vs_cudnn.values())
    per_layer = ", ".join(f"{l} {against(vs_cudnn[l], 1.0)}x" for l in gemm_layers)
    every = bool(gemm_layers) and all(vs_cudnn[l] >= 1 for l in gemm_layers)
    return [
        "## Goals\n",
        f"- im2win geomean >= 0.85x the same-shape SGEMM: {against(vs_sgemm, 0.85)}x -> "
        f"{verdict(vs_sgemm >= 0.85)}.",
        f"- im2win >= 1.0x the best cuDNN on every GEMM-type layer: {per_layer} -> "
        f"{verdict(every)}; geomean over all: {against(overall, 1.0)}x -> {verdict(overall >= 1)}.",
        "- Per layer, the fastest cuDNN algorithm: "
        + ", ".join(f"{l} {best_cudnn[l][0]}" for l in layers if best_cudnn[l][0])
        + ".",
        f"- im2win geomean >= 2.0x the strongest im2col + cuBLAS: {against(vs_im2col, 2.0)}x -> "
        f"{verdict(vs_im2col >= 2)}.",
        f"- Memory <= im2col on every layer: {verdict(mem_ok)}.",
        "",
    ]
