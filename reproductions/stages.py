"""A pipeline's stages in a work folder, each run once: a stage whose command (an equivalent
`supersam` command line) and code revision are unchanged, and whose output exists, is reused; one
interrupted with the same command is resumed; any other is run afresh, replacing its output.

The ledger (WORK/stages.json, rewritten atomically) records each stage's command line, result,
wall time and revision; `records` lists what happened in this run, for the raw file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from harness import environment
from harness.results import atomic_write
from supersam_min.commands import command_line


class Stages:
    """Runs pipeline stages in `work`, reusing one whose command and inputs are unchanged."""

    def __init__(self, work: Path, fresh: bool, progress: bool):
        self.ledger_path = work / "stages.json"
        if work.is_dir() and any(work.iterdir()) and not self.ledger_path.is_file():
            # its stages replace their outputs there, and --fresh removes the folder
            raise ValueError(
                f"--work-dir {work} holds files and no stages.json: it is not a work folder of "
                "this command, and its stages would replace what is there; give a new or empty "
                "folder"
            )
        if fresh and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.progress = work, progress
        self.ledger = json.loads(self.ledger_path.read_text()) if self.ledger_path.is_file() else {}
        self.records: list[dict] = []
        self._save()  # the folder is this command's from now on, whatever is written first

    def _save(self) -> None:
        atomic_write(self.ledger_path, json.dumps(self.ledger, indent=1))

    def run(
        self,
        name: str,
        command: Callable[..., dict],
        kwargs: dict,
        done: Path,
        resumable: Path | None = None,
    ) -> dict:
        """`command(**kwargs)` unless the ledger says it finished with this very command line and
        revision and `done` exists; resumed when `resumable` exists from the same command line."""
        argv = command_line(command.__name__, **kwargs)
        git = environment.git_state()  # another commit: the stage runs again
        key = hashlib.sha256(json.dumps([argv, git.get("commit")]).encode()).hexdigest()[:16]
        entry = self.ledger.get(name)
        same = entry is not None and entry["key"] == key
        record = {"kind": "stage", "stage": name, "argv": argv}
        if same and entry.get("result") is not None and done.exists():
            self.records.append(
                record | {"reused": True, "wall_s": entry["wall_s"], "git": entry["git"]}
            )
            return entry["result"]
        resume = same and resumable is not None and resumable.exists()
        self.ledger[name] = {"key": key, "argv": argv, "result": None, "wall_s": None, "git": git}
        self._save()
        started = time.perf_counter()
        flags = {"resume": True} if resume else {"overwrite": True}
        result = command(**kwargs, **flags, progress=self.progress)
        wall = time.perf_counter() - started
        self.ledger[name].update(result=result, wall_s=wall)
        self._save()
        self.records.append(
            record
            | {
                "argv": argv + ["--resume" if resume else "--overwrite"],
                "reused": False,
                "resumed": resume,
                "wall_s": wall,
                "git": git,
            }
        )
        return result
