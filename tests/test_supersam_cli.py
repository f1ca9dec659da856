"""The `supersam` command end to end at toy length: pretrain, train, resume, extract, evaluate."""

import json

import pytest

from supersam_min import cli


def test_pretrain_train_extract_evaluate(tmp_path, capsys):
    d = tmp_path
    assert (
        cli.main(
            [
                "pretrain",
                "--out",
                str(d / "pre"),
                "--steps",
                "2",
                "--images",
                "2",
                "--batch-size",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (d / "pre.pt").is_file() and (d / "pre.json").is_file()
    train = [
        "train",
        "--init",
        str(d / "pre"),
        "--out",
        str(d / "sup"),
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--checkpoint-every",
        "1",
        "--no-progress",
    ]
    assert cli.main(train) == 0
    assert (d / "sup" / "best.pt").is_file()  # validated on nuclei:val before and during training
    assert cli.main([*train[:-1], "--resume", "--no-progress"]) == 0  # nothing left: no-op
    (d / "cfg.json").write_text(
        json.dumps({"blocks": [0, 2, 3, 5], "mlp_widths": [384, 96, 128, 192]})
    )
    assert (
        cli.main(
            [
                "extract",
                "--supernet",
                str(d / "sup"),
                "--subnet",
                str(d / "cfg.json"),
                "--out",
                str(d / "small"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(d / "small"),
                "--prompt",
                "box",
                "--out",
                str(d / "r.json"),
                "--data",
                "nuclei:val",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((d / "r.json").read_text())
    assert printed == saved
    assert saved["objects"] > 20 and 0 <= saved["miou"] <= 1
    assert saved["subnet"]["mlp_widths"] == [384, 96, 128, 192]
    assert (
        cli.main(
            [
                "evaluate",
                "--model",
                str(d / "sup"),
                "--subnet",
                str(d / "cfg.json"),
                "--prompt",
                "box",
                "--data",
                "nuclei:val",
            ]
        )
        == 0
    )
    from_supernet = json.loads(capsys.readouterr().out)
    assert from_supernet["parameters"] == saved["parameters"]
    assert from_supernet["encoder_parameters"] == saved["encoder_parameters"]
    assert from_supernet["miou"] == pytest.approx(saved["miou"], abs=1e-6)

    # search: files written; different search seeds score a subnet alike (the smallest comes first)
    runs = []
    for seed in ("0", "1"):
        out = d / f"search{seed}"
        argv = ["search", "--supernet", str(d / "sup"), "--out", str(out), "--budget", "0.8"]
        argv += ["--evaluations", "2", "--seed", seed, "--method", "random", "--no-progress"]
        assert cli.main(argv) == 0
        for name in ("trials.json", "best_subnet.json", "best.pt", "best.json"):
            assert (out / name).is_file()
        runs.append(json.loads((out / "trials.json").read_text())["trials"])
    assert runs[0][0]["subnet"] == runs[1][0]["subnet"]
    assert runs[0][0]["score"] == runs[1][0]["score"]
    refused = ["search", "--supernet", str(d / "sup"), "--out", str(d / "t"), "--data"]
    with pytest.raises(SystemExit):
        cli.main([*refused, "nuclei:test"])
    assert "test split is for the table" in capsys.readouterr().err


def test_bad_subnet_and_missing_checkpoint_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(
            ["train", "--init", str(tmp_path / "none"), "--out", str(tmp_path / "s"), "--resume"]
        )
    (tmp_path / "sup").mkdir()
    (tmp_path / "sup" / "supernet.json").write_text('{"model": "sam_tiny"}')
    with pytest.raises(SystemExit):
        cli.main(["extract", "--supernet", str(tmp_path / "sup"), "--out", str(tmp_path / "x")])
    assert "supersam" in capsys.readouterr().err


def test_every_option_is_a_keyword_of_its_command_function():
    import argparse
    import inspect

    parser = cli.make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        options = {a.dest for a in p._actions if a.dest != "help"}
        params = set(inspect.signature(p.get_default("func")).parameters)
        assert options == params, (name, options ^ params)


def test_help_shows_only_defaults_that_say_something(capsys):
    with pytest.raises(SystemExit):
        cli.main(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--budget BUDGET largest allowed fraction" in out and "(default: 0.7)" in out
    # an on/off flag's default read as "no progress bar by default"; None says nothing
    assert "--no-progress no progress bar --precision" in out
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "--method {opentuner,random} opentuner: OpenTuner steers" in out
