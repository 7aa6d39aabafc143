"""An ensemble's run directory: what marks it, where its members are, and loading it.

An ensemble is a run directory like any other (run.json, config.yaml, metrics.json,
split_predictions.csv, README.md, manifest.json) whose run.json says ``"kind": "ensemble"``
and lists its members. Each member is a complete copy of a trained run under
``members/<name>/`` (without its Trainer checkpoints), so the ensemble is self-contained:
it can be copied, pushed and served without the runs it was built from. The ensemble's
manifest covers the members' files too, and each member is verified against its own
manifest again when it loads.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Callable

from review_toolkit.errors import RunDirectoryError
from review_toolkit.inference.ensemble import Combination, EnsembleClassifier
from review_toolkit.runs.layout import MEMBERS_DIRECTORY, RUN_FILE

ENSEMBLE_KIND = "ensemble"


def is_ensemble(info: Any) -> bool:
    """Whether a run.json (as read) describes an ensemble."""
    return isinstance(info, dict) and info.get("kind") == ENSEMBLE_KIND


def member_directories(run: Path, info: dict[str, Any]) -> list[tuple[str, Path]]:
    """(name, directory) of each member run.json lists, each checked to be a folder under ``members/``."""
    where = run / RUN_FILE
    members = info.get("members")
    if not isinstance(members, list) or len(members) < 2:
        raise RunDirectoryError(
            f"Cannot load the ensemble {run}: {where} must list at least two members. "
            "Build it again with 'review-toolkit ensemble'."
        )
    found = []
    for number, member in enumerate(members, start=1):
        relative = member.get("path") if isinstance(member, dict) else None
        parts = PurePosixPath(relative).parts if isinstance(relative, str) else ()
        if len(parts) != 2 or parts[0] != MEMBERS_DIRECTORY or parts[1] in ("", ".", ".."):
            raise RunDirectoryError(
                f"Cannot load the ensemble {run}: member {number} in {where} has path {relative!r}; a member "
                f"lives in {MEMBERS_DIRECTORY}/NAME inside the ensemble. Build it again with 'review-toolkit ensemble'."
            )
        found.append((parts[1], run / MEMBERS_DIRECTORY / parts[1]))
    return found


def load_ensemble(
    run: Path, info: dict[str, Any], load_member: Callable[[Path], Any], threshold: float
) -> EnsembleClassifier:
    """The ensemble classifier: each member loaded by ``load_member`` (``load_run`` with the caller's options)."""
    members = member_directories(run, info)
    combination = Combination.from_dict(info.get("combination"), len(members), str(run / RUN_FILE))
    classifiers = []
    for name, directory in members:
        if not (directory / RUN_FILE).is_file():
            raise RunDirectoryError(
                f"Cannot load the ensemble {run}: its member {name} ({directory}) is not a run directory. "
                "Copy the ensemble again from where it was built, or build it again."
            )
        classifiers.append(load_member(directory))
    return EnsembleClassifier(
        classifiers,
        combination=combination,
        threshold=threshold,
        info=info,
        member_names=[name for name, _ in members],
    )
