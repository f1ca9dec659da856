"""bench/run_asv.py (`tox -e bench`): what it says where asv cannot run, and how it passes asv's
failures on. bench/ is not installed; the script is loaded from its file."""

import importlib.util
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "run_asv.py"


@pytest.fixture
def run_asv(monkeypatch):
    spec = importlib.util.spec_from_file_location("run_asv", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, module.fake_code.pop(0) if module.fake_code else 0)

    monkeypatch.setattr(module.subprocess, "run", fake_run)
    monkeypatch.setattr(module, "installed", lambda name: True)
    monkeypatch.setattr(module, "head_commit", lambda: "0123abc")
    module.calls, module.fake_code = calls, []
    return module


def test_help_runs_nothing(run_asv, capsys):
    with pytest.raises(SystemExit) as exc:
        run_asv.main(["--help"])
    assert exc.value.code == 0 and "asv run" in capsys.readouterr().out
    assert run_asv.calls == []


def test_without_asv_one_line_that_says_how_to_get_it(run_asv, monkeypatch, capsys):
    monkeypatch.setattr(run_asv, "installed", lambda name: False)
    with pytest.raises(SystemExit) as exc:
        run_asv.main(["--quick"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert "asv is not installed" in err and "pip install asv" in err
    assert run_asv.calls == []


def test_outside_a_git_work_tree_one_line(run_asv, monkeypatch, capsys):
    monkeypatch.setattr(run_asv, "head_commit", lambda: None)
    with pytest.raises(SystemExit) as exc:
        run_asv.main([])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "not in a git work tree" in err and err.count("\n") == 1


def test_arguments_go_to_asv_run_under_head_and_a_failure_stops_with_its_code(run_asv, capsys):
    assert run_asv.main(["--quick", "--bench", "Conv2d.time_conv"]) == 0
    machine, run, publish = run_asv.calls
    assert run[-3:] == ["--quick", "--bench", "Conv2d.time_conv"]
    assert "--set-commit-hash" in run and "0123abc" in run and publish[-1] == "publish"

    run_asv.calls.clear()
    run_asv.fake_code = [0, 3]  # asv machine passes, asv run fails: no publish
    with pytest.raises(SystemExit) as exc:
        run_asv.main(["--bench", "NoSuch"])
    assert exc.value.code == 3 and len(run_asv.calls) == 2
    assert "`asv run` failed (exit 3)" in capsys.readouterr().err
