"""Which Trainer checkpoints of a run can be resumed from.

A process killed while Trainer writes ``checkpoint-N`` (``kill -9``, a power cut, a full disk)
leaves that folder empty or half-written. Trainer writes the weights first and
``trainer_state.json`` last, so a checkpoint is complete when its state file is a JSON object
with the step, its ``model.safetensors`` is whole (header and data) and each optimizer, scheduler
and random-state archive is a readable zip file. Nothing here unpickles: archives are checked by
their zip directory only.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from review_toolkit.runs.manifest import safetensors_problem

CHECKPOINT_DIRECTORY = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model.safetensors"
ARCHIVE_SUFFIXES = (".pt", ".pth")


def checkpoint_folders(directory: str | Path) -> list[Path]:
    """Every ``checkpoints/checkpoint-N`` folder of a run or staging directory, oldest first."""
    folder = Path(directory) / CHECKPOINT_DIRECTORY
    if not folder.is_dir():
        return []
    found = [
        path for path in folder.glob(f"{CHECKPOINT_PREFIX}*")
        if path.is_dir() and path.name[len(CHECKPOINT_PREFIX):].isdigit()
    ]
    return sorted(found, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX):]))


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (e.g. ``model.safetensors is missing``), or None."""
    checkpoint = Path(checkpoint)
    state_file = checkpoint / STATE_FILE
    if not state_file.is_file():
        return f"{STATE_FILE} is missing"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return f"{STATE_FILE} is not readable JSON"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{STATE_FILE} records no step"
    weights = checkpoint / WEIGHTS_FILE
    if not weights.is_file():
        return f"{WEIGHTS_FILE} is missing"
    reason = safetensors_problem(weights)
    if reason is not None:
        return f"{WEIGHTS_FILE} is not whole ({reason})"
    for archive in sorted(checkpoint.iterdir()):
        if archive.suffix in ARCHIVE_SUFFIXES and archive.is_file():
            try:
                with zipfile.ZipFile(archive):
                    pass
            except (zipfile.BadZipFile, OSError, ValueError):
                return f"{archive.name} is not a whole archive"
    return None


def checkpoints_in(directory: str | Path) -> list[Path]:
    """The complete checkpoints of a run or staging directory, oldest first."""
    return [path for path in checkpoint_folders(directory) if checkpoint_problem(path) is None]


def incomplete_checkpoints_in(directory: str | Path) -> list[tuple[Path, str]]:
    """(checkpoint, why) for each checkpoint folder of ``directory`` that cannot be resumed from."""
    found = []
    for path in checkpoint_folders(directory):
        problem = checkpoint_problem(path)
        if problem is not None:
            found.append((path, problem))
    return found


def relocate_checkpoint_states(staging: str | Path, run: str | Path) -> None:
    """Rewrite paths into ``staging`` in each checkpoint's ``trainer_state.json`` as paths relative to ``run``.

    Trainer records where it saved (``best_model_checkpoint``) as a path into the staging folder,
    which no longer exists once the run is renamed into place; relative to the run directory the
    path stays true wherever the run is moved.
    """
    staging, run = Path(staging), Path(run)
    prefixes = sorted({str(staging), str(staging.expanduser().absolute()), str(staging.resolve())}, key=len, reverse=True)

    def relocated(value):
        if isinstance(value, dict):
            return {key: relocated(item) for key, item in value.items()}
        if isinstance(value, list):
            return [relocated(item) for item in value]
        if isinstance(value, str):
            for prefix in prefixes:
                if value == prefix or value.startswith(prefix + "/"):
                    return value[len(prefix):].lstrip("/") or "."
        return value

    for checkpoint in checkpoint_folders(staging):
        state_file = checkpoint / STATE_FILE
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # an incomplete checkpoint: nothing resumes from it
        fixed = relocated(state)
        if fixed != state:
            temporary = state_file.with_name(f".{STATE_FILE}.tmp")
            temporary.write_text(json.dumps(fixed, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            temporary.replace(state_file)
