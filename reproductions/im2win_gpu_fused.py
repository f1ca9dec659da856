"""The window transform fused into the convolution in the GPU run: the entries that run a fused
variant on a channels_last copy of x, and the report's table setting each fused variant against
its twin over the window tensor."""

from __future__ import annotations

from reproductions.tables import fmt, ratio, table

# the ablation's entries that run a variant on a channels_last copy of x (made before timing, as a
# channels_last network holds its activations), by their variant: what the fused kernel's loads
# cost from NCHW, where they are scalar, against channels_last, where they are float4 of whole
# sectors (results/im2win-nvrtc, "The A tile's loads")
CHANNELS_LAST = {"im2win_sgemm_tile_fit_k_fused_cl": "sgemm_tile_fit_k_fused"}

FUSED = (  # (a variant over the window tensor, the same with the transform fused)
    ("im2win_sgemm_tile_fit_k", "im2win_sgemm_tile_fit_k_fused"),
    ("im2win_wide_thread_tile", "im2win_wide_thread_tile_fused"),
)


def _on_channels_last(fused: str) -> str | None:
    """The CHANNELS_LAST entry that runs the variant of `fused`, if any."""
    return next((k for k, v in CHANNELS_LAST.items() if f"im2win_{v}" == fused), None)


def fused_table(layers: list[str], tf: dict, correct: dict) -> list[str]:
    """The window transform fused into the convolution against the same tile over the window
    tensor (runs since 2026-12-04 hold both), and on a channels_last x: TFLOPS, and the fused
    kernel's speedup over its twin; n/a where either is missing or failed the FP32 check."""

    def ok(layer: str, impl: str) -> float | None:
        return tf.get((layer, impl)) if correct.get((layer, impl)) else None

    pairs = [p for p in FUSED if any(ok(l, p[1]) for l in layers)]
    if not pairs:
        return []
    header, rows = ["layer"], []
    for twin, fused in pairs:
        header += [twin.removeprefix("im2win_"), fused.removeprefix("im2win_"), "speedup"]
        if _on_channels_last(fused):
            header += ["fused, x channels_last", "speedup"]
    for l in layers:
        row = [l]
        for twin, fused in pairs:
            a, b = ok(l, twin), ok(l, fused)
            row += [fmt(a, ".2f"), fmt(b, ".2f"), fmt(ratio(b, a), ".2f")]
            if cl := _on_channels_last(fused):
                c = ok(l, cl)
                row += [fmt(c, ".2f"), fmt(ratio(c, a), ".2f")]
        rows.append(row)
    return [
        "## The window transform fused into the convolution (TFLOPS)\n",
        "Each tile over the window tensor (transform kernel, then convolution) and the same tile "
        "reading x itself (no transform, no window tensor), from the ablation; speedup: the fused "
        "kernel's over its twin on the same NCHW input, and on a channels_last copy of x made "
        "before timing (float4 loads of whole sectors where C % 4 == 0, against scalar loads from "
        'NCHW; results/im2win-nvrtc, "The A tile\'s loads").\n',
        table(header, rows),
    ]
