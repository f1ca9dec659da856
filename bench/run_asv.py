"""Run the asv suite in the current Python environment and publish its HTML (used by `tox -e bench`).

asv's "existing" environment benchmarks the installed code and needs the commit to file results
under; this passes the work tree's HEAD. Extra arguments go to `asv run` (e.g. --bench Conv2d.time).
"""

import subprocess
import sys


def main(argv: list[str]) -> int:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    asv = [sys.executable, "-m", "asv"]
    subprocess.run([*asv, "machine", "--yes"], check=True)
    subprocess.run(
        [
            *asv,
            "run",
            "--environment",
            f"existing:{sys.executable}",
            "--set-commit-hash",
            commit,
            "--show-stderr",
            *argv,
        ],
        check=True,
    )
    subprocess.run([*asv, "publish"], check=True)
    print("asv HTML: .asv/html/index.html (view with `asv preview`)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
