"""The outputs of the `supersam` commands: an existing one is never replaced silently, and none
replaces what its command reads. A run refuses an existing output unless told to continue it
(resume) or replace it (overwrite); overwrite deletes only what such a run wrote; an output that
is, or holds, one of the run's inputs is refused either way; a run that fails before it saved
anything resumable leaves no output behind.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from harness.results import check_writable
from supersam_min import storage


class OutputExists(ValueError):
    """An output that a run would overwrite without being told to."""


def _remove(paths: list[Path]) -> None:
    """Delete each of `paths` there is, a folder with what it holds."""
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def claimed(
    paths: list[Path],
    *,
    resume: bool,
    overwrite: bool,
    resumable: Path | None = None,
    reads: list[str | Path | None] = (),
    markers: tuple[str, ...] = (),
) -> Iterator[None]:
    """Guard a run's outputs `paths` (the first names them in errors).

    Existing outputs: refused unless resume or overwrite (overwrite removes them first), and so is
    a folder the outputs could not be written in (harness.results.check_writable), and an output
    that is, or holds, one of the inputs the run `reads` (spares). An output folder that
    overwrite would remove must be empty or hold one of `markers` (files such a run writes
    first): a folder of other files is refused. On failure, outputs this run created are removed
    unless `resumable` exists (a checkpoint to --resume from).
    """
    spares(paths, reads)
    existing = [p for p in paths if p.exists()]
    if resume and overwrite:
        raise ValueError("--resume continues an output and --overwrite replaces it: give one")
    if existing and not (resume or overwrite):
        raise OutputExists(
            f"{paths[0]} exists (an earlier run's output); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    for folder in dict.fromkeys(p.parent for p in paths):
        check_out_folder(folder)
    if overwrite:
        foreign = [
            p
            for p in existing
            if p.is_dir() and any(p.iterdir()) and not any((p / m).is_file() for m in markers)
        ]
        if foreign:
            raise ValueError(
                f"--overwrite would delete {foreign[0]}, a folder this command did not write (no "
                f"{' or '.join(markers)} in it); choose another --out"
            )
        _remove(existing)
    try:
        yield
    except BaseException:
        if not resume and not (resumable is not None and resumable.exists()):
            _remove(paths)
        raise


def spares(outputs: list[Path], reads: list[str | Path | None]) -> None:
    """ValueError where an output would replace something the command reads: the same file, or a
    folder that holds it (--overwrite removes an output before the run: `search --supernet S
    --out S --overwrite` deleted the supernet)."""
    targets = [(path, path.resolve()) for path in outputs]
    for read in reads:
        if read is None or not Path(read).exists():  # nothing to lose (nuclei:val is no file)
            continue
        source = Path(read).resolve()
        for path, target in targets:
            if target == source or target in source.parents:
                raise ValueError(
                    f"--out {path} would replace {read}, which this command reads; choose "
                    "another --out"
                )


def model_reads(path: str | Path) -> list[Path]:
    """What loading `path` reads: a saved model's two files, or a supernet folder and its files."""
    path = Path(path)
    folder = [path / name for name in (storage.BEST, storage.CHECKPOINT, storage.SUPERNET_META)]
    return [path, *model_paths(path), *folder]


def check_out_folder(folder: Path) -> None:
    try:
        check_writable(folder)
    except ValueError as exc:
        raise ValueError(f"{exc}; choose another --out") from None


def model_paths(path: Path) -> list[Path]:
    """A saved model's two files: PATH.pt (weights) and PATH.json (architecture)."""
    return [path.with_suffix(".pt"), path.with_suffix(".json")]
