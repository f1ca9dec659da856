"""The `repro` command end to end at the smoke scale: raw JSON, tables, figures, re-render."""

import json

import pytest

import im2win
from reproductions import cli


def test_run_and_render_smoke(tmp_path, capsys):
    args = ["--results-dir", str(tmp_path)]
    assert (
        cli.main(
            [
                "run",
                "im2win-cpu",
                "--scale",
                "smoke",
                "--layers",
                "conv1",
                "conv12",
                "--repeat",
                "1",
                "--no-progress",
                *args,
            ]
        )
        == 0
    )
    raw = sorted((tmp_path / "raw" / "im2win-cpu").glob("*.json"))
    assert len(raw) == 1
    doc = json.loads(raw[0].read_text())
    assert {"schema_version", "command", "environment", "config", "timing_method", "peak"} <= set(
        doc
    )
    assert len(doc["records"]) == 2 * len(im2win.IMPLEMENTATIONS)
    for rec in doc["records"]:
        for key in ("layer", "impl", "time_ms", "gflops", "fraction_of_peak", "extra_mem_bytes"):
            assert key in rec
        assert rec["correct"]
    out_dir = tmp_path / "im2win-cpu"
    for name in ("README.md", "gflops.png", "memory.png", "fraction_of_peak.png"):
        assert (out_dir / name).stat().st_size > 0
    (out_dir / "gflops.png").unlink()
    assert cli.main(["render", "im2win-cpu", *args]) == 0  # no measuring, same raw file
    assert (out_dir / "gflops.png").exists()
    assert "conv12" in (out_dir / "README.md").read_text()


def test_render_without_results_says_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match="repro run im2win-cpu"):
        cli.main(["render", "im2win-cpu", "--results-dir", str(tmp_path)])


def test_unknown_scale_and_layer_are_usage_errors(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["run", "im2win-cpu", "--scale", "huge", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli.main(["run", "im2win-cpu", "--layers", "conv99", "--results-dir", str(tmp_path)])
