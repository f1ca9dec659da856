"""Weight files: safe loading (torch.load with weights_only=True), strict loading into a model, and
atomic saving. Every failure is one ValueError naming the file, never advice to load unsafely."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A weight file that cannot be read, or that does not fit the model it is loaded into."""


def load_state(path: str | Path) -> dict:
    """The tensors (and plain containers) saved in `path`, loaded with weights_only=True.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a truncated or foreign file, or one that holds pickled Python objects
            beyond tensors (refused: such files can run code when loaded).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} holds more than tensors (pickled Python objects), so it is not "
            "loaded; save the model's state_dict() alone and give that file"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read (truncated or not a PyTorch file: {reason})"
        ) from None


def model_state(state: object, path: str | Path) -> dict:
    """The state_dict in what load_state read from `path`: the file's own, or a training
    checkpoint's "model" entry."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict")
    return state


def load_into(
    model: torch.nn.Module, path: str | Path, state: dict | None = None
) -> torch.nn.Module:
    """Load a state_dict file (or a training checkpoint's "model" entry) into `model`, strictly.
    `state`: the file's model_state, where the caller has read it already."""
    state = model_state(load_state(path), path) if state is None else state
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model: {len(missing)} missing key(s) "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, {len(unexpected)} unexpected "
            f"key(s) {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; is it the right "
            "architecture (vit_b / vit_l / vit_h / sam_tiny)?"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shapes differ
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not match the model: {first}") from None
    return model


def save_state(obj: dict, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
