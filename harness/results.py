"""Run files: one JSON document per run (plus a CSV copy of its records), written atomically.

Layout: results/raw/<experiment>/<UTC time>_<scale>.json (and .csv). A new file per run; an existing
file is never overwritten. The JSON carries everything needed to re-render tables and figures on any
machine and to trace each number back to the command, code revision and machine that produced it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

SCHEMA_VERSION = 1


def default_results_dir() -> Path:
    """results/ under the current directory (the repository root under tox and the README)."""
    return Path.cwd() / "results"


REQUIRED_KEYS = (
    "schema_version",
    "experiment",
    "created_utc",
    "command",
    "environment",
    "config",
    "timing_method",
    "records",
)


def atomic_write(path: Path, data: str | bytes, overwrite: bool = True) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename.

    A crash leaves either the old file or the new one, never a partial file. With overwrite=False an
    existing `path` is an error (FileExistsError) and is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: no silent overwrite
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(folder: Path) -> None:
    """Refuse, before any work starts, a folder that files could not be written in (ValueError
    naming it and why): its nearest existing ancestor must be a folder this process can create a
    file in. Creates nothing. (`repro run im2win-cpu --results-dir FILE` once measured a whole layer
    and then died in a traceback at the first save.)"""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write in {folder}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"cannot write in {folder}: {reason} ({existing})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _csv(records: list[dict]) -> str:
    columns: list[str] = []
    for rec in records:
        columns += [k for k in rec if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for rec in records:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in rec.items()}
        )
    return buf.getvalue()


def invocation() -> str:
    """This process's command line as a user would type it again: `repro run ...` from an
    installed command, `python -m reproductions run ...` where it ran with -m (whose sys.argv[0]
    is the module's file, __main__.py, which no one can type)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        head = ["python", "-m", spec.name.removesuffix(".__main__")]
    else:
        head = [Path(sys.argv[0]).name]
    return shlex.join([*head, *sys.argv[1:]])


def write_run(
    experiment: str,
    *,
    config: dict,
    environment: dict,
    timing_method: str,
    records: list[dict],
    extra: dict | None = None,
    results_dir: Path | None = None,
    command: str | None = None,
) -> Path:
    """Write one run as JSON (and CSV) under results_dir/raw/<experiment>/ and return the JSON path."""
    now = dt.datetime.now(dt.UTC)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "experiment": experiment,
        "created_utc": now.isoformat(timespec="seconds"),
        "command": command if command is not None else invocation(),
        "environment": environment,
        "config": config,
        "timing_method": timing_method,
        **(extra or {}),
        "records": records,
    }
    folder = (results_dir or default_results_dir()) / "raw" / experiment
    stem = f"{now:%Y%m%dT%H%M%SZ}_{config.get('scale', 'run')}"
    for attempt in range(1000):
        path = folder / (f"{stem}.json" if attempt == 0 else f"{stem}-{attempt}.json")
        try:
            atomic_write(path, json.dumps(doc, indent=1, sort_keys=False) + "\n", overwrite=False)
        except FileExistsError:
            continue
        atomic_write(path.with_suffix(".csv"), _csv(records), overwrite=False)
        return path
    raise RuntimeError(f"could not find a free file name for {stem} in {folder}")


def load_run(path: Path) -> dict:
    """Read a run file, checking that it is one (clear error otherwise)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read run file {path}: {exc}") from exc
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise ValueError(f"{path} is not a run file (missing {', '.join(missing)})")
    if doc["schema_version"] > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema version {doc['schema_version']}; this code reads up to "
            f"{SCHEMA_VERSION}: update the suite"
        )
    return doc


def run_files(experiment: str, results_dir: Path | None = None) -> list[Path]:
    """Run files of an experiment, oldest first (see run_files_in)."""
    return run_files_in((results_dir or default_results_dir()) / "raw" / experiment)


def run_files_in(folder: Path) -> list[Path]:
    """The run files in `folder`, oldest first (a hidden .json, such as the ._ copies macOS leaves
    beside files, is not a run file; a run's partial state and a write in progress are not
    .json)."""
    files = folder.glob("*.json") if folder.is_dir() else []
    return sorted(p for p in files if not p.name.startswith("."))
