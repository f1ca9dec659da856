"""Run the asv suite in the current Python environment and publish its HTML (used by `tox -e bench`).

asv's "existing" environment benchmarks the installed code and needs the commit to file results
under; this passes the work tree's HEAD. Every other argument goes to `asv run`, e.g.

    python -m bench.run_asv --quick --bench Conv2d.time_conv

A full run takes tens of minutes on 2 cores (im2win_nchw and direct are slow); the HTML lands in
.asv/html (`asv preview` serves it).
"""

import argparse
import importlib.metadata
import subprocess
import sys


def installed(distribution: str) -> bool:
    """Whether a package is installed (by its metadata: bench/asv, the suite's folder, would pass
    for asv itself as an import when this runs as a script)."""
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def head_commit() -> str | None:
    """The work tree's HEAD, or None outside a git work tree (or without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_asv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _, asv_args = parser.parse_known_args(argv)  # --help here; everything else is asv run's
    if not installed("asv"):
        parser.exit(
            2,
            f"{parser.prog}: asv is not installed in {sys.executable}: "
            "pip install asv, or run `tox -e bench`\n",
        )
    commit = head_commit()
    if commit is None:
        parser.exit(
            2,
            f"{parser.prog}: not in a git work tree: asv files results under a "
            "commit; run it from a clone of the project\n",
        )
    asv = [sys.executable, "-m", "asv"]
    steps = [
        [*asv, "machine", "--yes"],
        [
            *asv,
            "run",
            "--environment",
            f"existing:{sys.executable}",
            "--set-commit-hash",
            commit,
            "--show-stderr",
            *asv_args,
        ],
        [*asv, "publish"],
    ]
    for step in steps:
        code = subprocess.run(step).returncode
        if code:  # asv has said why, above
            parser.exit(code, f"{parser.prog}: `asv {step[3]}` failed (exit {code})\n")
    print("asv HTML: .asv/html/index.html (view with `asv preview`)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
