"""Every user mistake the `supersam` command met ends in one line naming the problem, and no run
without --resume (or --overwrite) replaces an earlier one."""

import json
import pickle

import pytest
import torch

from supersam_min import cli, commands


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A pretrained tiny model, its supernet and a search, at toy length."""
    d = tmp_path_factory.mktemp("made")
    commands.pretrain(d / "pre", steps=1, images=2, device="cpu", progress=False)
    commands.train_supernet(
        d / "pre",
        d / "sup",
        steps=2,
        checkpoint_every=1,
        batch_size=1,
        device="cpu",
        progress=False,
    )
    commands.search(
        d / "sup", d / "search", method="random", evaluations=1, device="cpu", progress=False
    )
    return d


def _fails(argv, capsys, *needles):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _train(made, out, *extra):
    return ["train", "--init", str(made / "pre"), "--out", str(out), "--no-progress", *extra]


def test_an_existing_supernet_is_not_replaced_without_resume(made, capsys):
    before = (made / "sup" / "checkpoint.pt").read_bytes()
    _fails(_train(made, made / "sup", "--steps", "3"), capsys, "exists", "--resume", "--overwrite")
    assert (made / "sup" / "checkpoint.pt").read_bytes() == before


def test_an_existing_search_is_not_replaced_without_resume(made, capsys):
    before = (made / "search" / "trials.json").read_text()
    argv = ["search", "--supernet", str(made / "sup"), "--out", str(made / "search")]
    _fails([*argv, "--method", "random", "--evaluations", "2"], capsys, "exists")
    assert (made / "search" / "trials.json").read_text() == before


def test_overwrite_replaces_and_resume_continues(made, tmp_path):
    out = tmp_path / "s"
    common = dict(method="random", device="cpu", progress=False)
    commands.search(made / "sup", out, evaluations=1, **common)
    more = commands.search(made / "sup", out, evaluations=2, resume=True, **common)
    assert more["evaluations"] == 2
    fresh = commands.search(made / "sup", out, evaluations=1, overwrite=True, **common)
    assert fresh["evaluations"] == 1


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--checkpoint-every", "0"], "checkpoint_every must be >= 1"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
        (["--calibration", "0"], "--calibration must be >= 1"),
        (["--device", "bogus"], "unknown device"),
        (["--data", "/no/such/folder"], "/no/such/folder"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(made, tmp_path, capsys, extra, needle):
    out = tmp_path / "sup"
    _fails(_train(made, out, *extra), capsys, needle)
    assert not out.exists()


def test_a_failed_run_leaves_no_half_made_folder(made, tmp_path, monkeypatch):
    def boom(*_, **__):
        raise RuntimeError("interrupted before the first checkpoint")

    monkeypatch.setattr(commands, "train", boom)
    with pytest.raises(RuntimeError):
        commands.train_supernet(made / "pre", tmp_path / "sup", device="cpu", progress=False)
    assert not (tmp_path / "sup").exists()


def test_a_truncated_checkpoint_on_resume_is_one_line(made, tmp_path, capsys):
    import shutil

    sup = tmp_path / "sup"
    shutil.copytree(made / "sup", sup)
    data = (sup / "checkpoint.pt").read_bytes()
    (sup / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    _fails(_train(made, sup, "--steps", "4", "--resume"), capsys, "checkpoint.pt", "cannot be read")


class _NotATensor:
    pass


def test_a_checkpoint_with_pickled_objects_is_refused_without_unsafe_advice(made, tmp_path, capsys):
    import shutil

    for name in ("pre.pt", "pre.json"):
        shutil.copy(made / name, tmp_path / name)
    state = torch.load(tmp_path / "pre.pt", weights_only=True)
    state["extra"] = _NotATensor()
    torch.save(state, tmp_path / "pre.pt", pickle_protocol=pickle.HIGHEST_PROTOCOL)
    err = _fails(
        ["evaluate", "--model", str(tmp_path / "pre"), "--device", "cpu"],
        capsys,
        "pre.pt",
        "holds more than tensors",
    )
    assert "weights_only=False" not in err


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda a: a["subnet"]["mlp_widths"].__setitem__(0, -3), "'subnet.mlp_widths'"),
        (lambda a: a.__setitem__("model", "vit_z"), "field 'model'"),
        (lambda a: a.pop("subnet"), "field 'subnet' is missing"),
        (
            lambda a: a.__setitem__(
                "subnet", {"blocks": list(range(10000)), "mlp_widths": [8] * 10000}
            ),
            "outside sam_tiny's 0..5",
        ),
        (lambda a: a.__setitem__("global_attn_positions", [99]), "'global_attn_positions'"),
    ],
)
def test_a_bad_architecture_file_names_the_file_and_field(made, tmp_path, capsys, change, needle):
    import shutil
    import time

    shutil.copy(made / "pre.pt", tmp_path / "pre.pt")
    arch = json.loads((made / "pre.json").read_text())
    change(arch)
    (tmp_path / "pre.json").write_text(json.dumps(arch))
    started = time.perf_counter()
    _fails(
        ["evaluate", "--model", str(tmp_path / "pre"), "--device", "cpu"],
        capsys,
        "pre.json",
        needle,
    )
    assert time.perf_counter() - started < 5  # refused before anything is built


def test_an_architecture_file_that_is_a_list_is_one_line(made, tmp_path, capsys):
    import shutil

    shutil.copy(made / "pre.pt", tmp_path / "pre.pt")
    (tmp_path / "pre.json").write_text("[1, 2]")
    _fails(
        ["evaluate", "--model", str(tmp_path / "pre"), "--device", "cpu"],
        capsys,
        "expected a JSON object",
    )


def test_evaluate_does_not_overwrite_its_output(made, tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("earlier")
    argv = ["evaluate", "--model", str(made / "pre"), "--out", str(out), "--device", "cpu"]
    _fails(argv, capsys, "exists", "--overwrite")
    assert out.read_text() == "earlier"


def test_repro_render_of_an_empty_run_is_one_line_and_keeps_the_outputs(tmp_path, capsys):
    from harness import results
    from reproductions import cli as repro

    raw = results.write_run(
        "supersam-speed",
        config={"scale": "smoke"},
        environment={},
        timing_method="t",
        records=[],
        results_dir=tmp_path,
        command="test",
    )
    readme = tmp_path / "supersam-speed" / "README.md"
    readme.parent.mkdir()
    readme.write_text("earlier tables")
    with pytest.raises(SystemExit) as exc:
        repro.main(["render", "supersam-speed", "--raw", str(raw), "--results-dir", str(tmp_path)])
    assert "no records" in str(exc.value)
    assert readme.read_text() == "earlier tables"


def test_bf16_without_a_gpu_is_one_line(made, capsys):
    argv = ["evaluate", "--model", str(made / "pre"), "--device", "cpu", "--precision", "bf16"]
    _fails(argv, capsys, "bf16 runs on a CUDA GPU")


@pytest.mark.parametrize("command", ["extract", "search"])
def test_a_supernet_argument_that_is_not_one_says_what_it_found(made, tmp_path, capsys, command):
    """extract and search once answered a missing --supernet, or a saved model given as one, with
    "--subnet applies to a supernet folder" (search has no --subnet)."""
    (tmp_path / "empty").mkdir()
    found = {
        tmp_path / "missing": "no such folder",
        tmp_path / "empty": "a folder without supernet.json",
        made / "pre": "a saved model, not a supernet folder",
    }
    for path, says in found.items():
        err = _fails(
            [command, "--supernet", str(path), "--out", str(tmp_path / "out")], capsys, says
        )
        assert "--subnet" not in err and "supersam train --out" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("under", ["a_file", "a_file/deeper"])
def test_an_out_folder_that_cannot_be_written_is_refused_before_any_work(
    made, tmp_path, capsys, monkeypatch, under
):
    """--out under a file once trained to the end and then failed at the save."""
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setattr(commands, "train", lambda *_, **__: pytest.fail("trained before the check"))
    out = tmp_path / under / "sup"
    _fails(_train(made, out), capsys, "a_file is a file, not a folder", "--out")
    argv = ["evaluate", "--model", str(made / "pre"), "--out", str(tmp_path / under / "r.json")]
    _fails(argv, capsys, "a_file is a file, not a folder", "--out")


def test_python_dash_m_runs_the_command_line_in_a_checkout():
    """`python -m supersam_min` is the `supersam` command, for a checkout that is not installed
    (it said "No module named supersam_min.__main__"); a usage error exits 2, naming it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = [sys.executable, "-m", "supersam_min"]
    ok = subprocess.run([*run, "--help"], cwd=root, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("usage: supersam "), ok.stderr
    bad = subprocess.run([*run, "bogus"], cwd=root, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice: 'bogus'" in bad.stderr


def test_an_official_checkpoint_imports_as_the_model_it_holds(made, tmp_path, capsys):
    """`supersam import` takes a state_dict file as the official SAM checkpoints are (no
    architecture file beside it), reads its architecture from the weights, and writes a saved
    model that the other commands load with the same weights."""
    from supersam_min.storage import load_model

    state = torch.load(made / "pre.pt", weights_only=True)
    torch.save(state, tmp_path / "sam_tiny_0123ab.pth")
    ckpt = str(tmp_path / "sam_tiny_0123ab.pth")
    assert cli.main(["import", "--checkpoint", ckpt, "--out", str(tmp_path / "pre")]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"] == "sam_tiny"
    loaded = load_model(tmp_path / "pre").sam.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    _fails(
        ["import", "--checkpoint", ckpt, "--out", str(tmp_path / "pre")],
        capsys,
        "exists",
        "--overwrite",
    )
    same = ["import", "--checkpoint", str(tmp_path / "pre.pt"), "--out", str(tmp_path / "pre")]
    _fails([*same, "--overwrite"], capsys, "which this command reads")
    assert (tmp_path / "pre.pt").is_file()


def test_a_checkpoint_where_a_saved_model_goes_names_supersam_import(made, tmp_path, capsys):
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    ckpt.write_bytes((made / "pre.pt").read_bytes())
    _fails(
        ["train", "--init", str(ckpt), "--out", str(tmp_path / "sup"), "--no-progress"],
        capsys,
        "is a weight file, not a saved model",
        f"supersam import --checkpoint {ckpt} --out OUT",
    )
    assert not (tmp_path / "sup").exists()


@pytest.mark.parametrize(
    "state, extra, needle",
    [
        ({"weight": torch.zeros(2, 2)}, [], "holds no SAM image encoder"),
        (None, ["--model", "vit_b"], "does not match the model"),  # the tiny model's weights
        (
            {"image_encoder.patch_embed.proj.weight": torch.zeros(40, 3, 16, 16)},
            [],
            "40 wide with 0 blocks, which is none of vit_b (768 x 12)",
        ),
    ],
)
def test_a_checkpoint_of_no_known_sam_is_one_line(made, tmp_path, capsys, state, extra, needle):
    ckpt = tmp_path / "c.pth"
    torch.save(state if state is not None else torch.load(made / "pre.pt", weights_only=True), ckpt)
    out = tmp_path / "m"
    _fails(["import", "--checkpoint", str(ckpt), "--out", str(out), *extra], capsys, needle)
    assert not out.with_suffix(".pt").exists() and not out.with_suffix(".json").exists()


def test_an_option_is_taken_in_full_only(made, tmp_path, capsys):
    """argparse takes a prefix of one option for that option: `train --checkpoint X` meant the
    official checkpoint and was read as --checkpoint-every X."""
    with pytest.raises(SystemExit) as exc:
        cli.main([*_train(made, tmp_path / "sup"), "--checkpoint", "50"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --checkpoint 50" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, kept",
    [
        (["search", "--supernet", "W/sup", "--out", "W/sup", "--method", "random"], "sup"),
        (["search", "--supernet", "W/sup", "--out", "W", "--method", "random"], "sup"),
        (["extract", "--supernet", "W/sup", "--out", "W/sup/best"], "sup/best.pt"),
        (["train", "--init", "W/pre", "--out", "W", "--no-progress"], "pre.pt"),
        (["evaluate", "--model", "W/pre", "--out", "W/pre.json"], "pre.json"),
    ],
)
def test_an_output_never_replaces_what_the_command_reads(made, tmp_path, capsys, argv, kept):
    """With --overwrite the output is removed before the run: an --out that is, or holds, the
    command's own input deleted it (`search --supernet S --out S --overwrite`, the supernet)."""
    import shutil

    shutil.copytree(made / "sup", tmp_path / "sup")
    for name in ("pre.pt", "pre.json"):
        shutil.copy(made / name, tmp_path / name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = [a.replace("W", str(tmp_path)) for a in argv]
    _fails([*argv, "--overwrite", "--device", "cpu"], capsys, "which this command reads")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / kept).exists()


@pytest.mark.parametrize("command", ["search", "train"])
def test_overwrite_deletes_only_a_folder_the_command_wrote(made, tmp_path, capsys, command):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    if command == "search":
        argv = ["search", "--supernet", str(made / "sup"), "--method", "random"]
    else:
        argv = _train(made, mine)[:3]
    argv += ["--out", str(mine), "--overwrite", "--device", "cpu"]
    _fails(argv, capsys, f"--overwrite would delete {mine}, a folder this command did not write")
    assert (mine / "notes.txt").read_text() == "keep"
