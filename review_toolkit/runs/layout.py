"""The run directory: written aside and renamed into place, loaded back without executing code.

Layout::

    RUN/
      config.yaml      the resolved TrainConfig (feed it back with --config)
      run.json         what the loader needs: plugins, checkpoint, sizes, threshold, timings
      metrics.json     test-split metrics
      report.txt       scikit-learn classification report
      tokenizer/       the tokenizer used in training
      featurizer/      instead of tokenizer/: a FeaturizerBackbone's fitted state (JSON / safetensors)
      head.safetensors torch head weights, or a fitted head's arrays (+ head.json)
      adapter/         lora, qlora: PEFT adapters (adapter_config.json names the base by Hub id
                       or relative to adapter/) | encoder/: full, a save_pretrained model folder
                       (config.json, model.safetensors, tokenizer files, 1_Pooling/, 2_Dense/)
      checkpoints/     the last Trainer checkpoint, for --resume-from (trainer_state.json's paths
                       are relative to the run once it is in place)
      members/         an ensemble only: a complete copy of each member run (see runs.ensemble_run)
      onnx/            written by `export --format onnx`: the encoder as ONNX, and export.json
      README.md        the model card
      manifest.json    SHA-256 and size of every file above except checkpoints/

The toolkit's own names (``RESERVED_NAMES``) are never a plugin's: a method
writes only the names it declares in ``Method.run_files`` (``method/`` unless it
declares others), a fitted head those in ``FittedHead.run_files``, a featurizer
only inside ``featurizer/``. ``check_plugin_writes`` refuses a run whose plugin
wrote or changed anything else.

A run appears complete or not at all: everything is written into
``RUN.partial``, the manifest is written last, and the directory is renamed
into place. An existing run is replaced only with ``--overwrite``.

When a training fails, its staging directory is removed, with two exceptions
that exist to be resumed with ``--resume-from RUN.partial``: a training
interrupted (Ctrl-C, SIGTERM) after a checkpoint was saved, and a staging
directory that the training was resuming from (it held the user's checkpoints
before this attempt). ``load_run`` verifies the manifest before it reads
anything (see :mod:`review_toolkit.runs.manifest`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from review_toolkit.config import read_yaml_mapping
from review_toolkit.errors import PluginError, ReviewToolkitError, RunDirectoryError
from review_toolkit.inference.onnx_backend import ONNX_DIRECTORY
from review_toolkit.runs.checkpoints import (
    CHECKPOINT_DIRECTORY,
    checkpoints_in,
    incomplete_checkpoints_in,
    relocate_checkpoint_states,
)
from review_toolkit.runs.lock import DirectoryLock
from review_toolkit.runs.manifest import MANIFEST_FILE, write_manifest
from review_toolkit.runs.model_card import MODEL_CARD_FILE
from review_toolkit.runtime.os_errors import require_creatable_directory

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.txt"
TOKENIZER_DIRECTORY = "tokenizer"
FEATURIZER_DIRECTORY = "featurizer"
TORCH_HEAD_FILE = "head.safetensors"
SPLIT_PREDICTIONS_FILE = "split_predictions.csv"
EVALUATION_DIRECTORY = "evaluation"
TRAINING_LOG_FILE = "training_log.jsonl"  # the run's training history (review_toolkit.train.tracking)
MEMBERS_DIRECTORY = "members"  # an ensemble's copies of its member runs (review_toolkit.runs.ensemble_run)
PARTIAL_SUFFIX = ".partial"
# A cross-validation directory (``train --folds K``): fold-1..K (each a run), final/ (--refit),
# cv.json (per-fold metrics, mean, std: written last, it marks the whole as complete) and the
# out-of-fold predictions. Staged and renamed like a run.
CROSS_VALIDATION_FILE = "cv.json"
OUT_OF_FOLD_FILE = "oof_predictions.csv"
FOLD_PREFIX = "fold-"
REFIT_DIRECTORY = "final"

#: Names the toolkit writes at the top of a run directory; no plugin may declare or write them.
#: (``head.safetensors`` is the head's: the toolkit writes a torch head's weights there, a
#: fitted head its arrays.)
RESERVED_NAMES: frozenset[str] = frozenset({
    RUN_FILE, CONFIG_FILE, METRICS_FILE, REPORT_FILE, MODEL_CARD_FILE, MANIFEST_FILE, TOKENIZER_DIRECTORY,
    FEATURIZER_DIRECTORY, CHECKPOINT_DIRECTORY, SPLIT_PREDICTIONS_FILE, EVALUATION_DIRECTORY, TRAINING_LOG_FILE, MEMBERS_DIRECTORY,
    ONNX_DIRECTORY,
})

#: The formats a plugin may store in a run: tensors as safetensors, everything else as JSON, YAML or text.
PLUGIN_FILE_SUFFIXES: frozenset[str] = frozenset({".safetensors", ".json", ".yaml", ".yml", ".txt", ".md", ".csv", ".tsv"})

Snapshot = dict[str, tuple[int, int, int]]


def snapshot(directory: Path) -> Snapshot:
    """Every file and folder under ``directory``: relative path -> (size, mtime_ns, inode).

    Taken before and after a plugin saves, it shows what the plugin wrote, replaced or removed
    without reading any file.
    """
    directory = Path(directory)
    state: Snapshot = {}
    for path in directory.rglob("*"):
        stat = path.lstat()
        key = path.relative_to(directory).as_posix() + ("/" if path.is_dir() else "")
        state[key] = (0, 0, 0) if path.is_dir() else (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return state


def touched_names(before: Snapshot, after: Snapshot) -> set[str]:
    """Top-level names under which something was added, changed or removed between two snapshots."""
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    return {key.split("/", 1)[0] for key in changed}


def check_plugin_writes(directory: Path, before: Snapshot, *, plugin: str, allowed: tuple[str, ...]) -> None:
    """Refuse, naming the file, what ``plugin`` wrote in the run ``directory`` outside ``allowed``."""
    outside = sorted(touched_names(before, snapshot(directory)) - set(allowed))
    if not outside:
        return
    name = outside[0]
    declared = ", ".join(allowed) if allowed else "none"
    if name in RESERVED_NAMES:
        why = f"a name the toolkit reserves for its own files ({', '.join(sorted(RESERVED_NAMES))})"
    else:
        why = "which is not among the names it declares in `run_files`"
    raise PluginError(
        f"The {plugin} wrote or changed {name} in the run directory, {why}. A plugin writes only under "
        f"the names it declares in `run_files` (now: {declared}); see docs/PLUGINS.md, 'Reserved files'."
    )


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def trained_text_column(run: str | Path) -> str:
    """The text column the run was trained on (``predict``'s default), "text" where unknown.

    Read before the run is loaded and verified, so anything wrong with the file is left for
    loading to report; this only picks a default.
    """
    try:
        values = read_run_config_file(run)
    except ReviewToolkitError:
        return "text"
    column = values.get("text_column")
    return column if isinstance(column, str) and column else "text"


def read_run_config_file(run: str | Path) -> dict[str, Any]:
    """The run's config.yaml as a mapping; errors name the file."""
    return read_yaml_mapping(Path(run) / CONFIG_FILE, what="Run config", missing_hint="", mapping_hint="hold a mapping")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM back until the block is done (POSIX main thread; elsewhere a no-op)."""
    deferred = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class RunWriter:
    """Stage a run in ``<output>.partial`` and move it into place when complete.

    Construct it before loading any model: refusals (the run exists, an interrupted run would be
    thrown away, another training writes the same directory, the directory cannot be created)
    cost nothing then. From construction until ``commit``, ``discard`` or ``abandon`` it holds
    the output directory's lock (see :mod:`review_toolkit.runs.lock`); ``lock=False`` for the
    processes of a multi-GPU launch other than the main one, which write nothing.
    """

    def __init__(self, output_dir: str | Path, *, overwrite: bool = False, resuming: bool = False, lock: bool = True):
        self.final = Path(output_dir).expanduser()
        self.partial = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        self.resuming = resuming  # continuing the interrupted training staged in self.partial
        require_creatable_directory(self.final, "--output-dir")
        self._refuse_foreign_staging()
        self.lock = DirectoryLock(self.final)
        if lock:
            self.lock.acquire()
        try:
            self._refuse_unless_allowed(overwrite)
        except BaseException:
            self.lock.release()
            raise

    def _refuse_foreign_staging(self) -> None:
        """``RUN.partial`` is a folder this toolkit stages in; a file or link there is someone else's."""
        if self.partial.is_symlink():
            raise RunDirectoryError(
                f"{self.partial} is a symbolic link (to {os.readlink(self.partial)}), not a staging folder of a "
                "training; it is left alone. Remove the link, or choose another --output-dir."
            )
        if self.partial.exists() and not self.partial.is_dir():
            raise RunDirectoryError(
                f"{self.partial} is a file, not a staging folder of a training; it is left alone. Remove it, "
                "or choose another --output-dir."
            )

    def _refuse_unless_allowed(self, overwrite: bool) -> None:
        if self.final.exists() and not overwrite:
            raise RunDirectoryError(
                f"{self.final} already exists. Choose another --output-dir, or pass --overwrite to replace it."
            )
        if self.final.exists() and not self.final.is_dir():
            raise RunDirectoryError(f"{self.final} exists and is not a directory; choose another --output-dir.")
        if not self.resuming and not overwrite and checkpoints_in(self.partial):
            raise RunDirectoryError(
                f"{self.partial} holds an interrupted training (checkpoint {checkpoints_in(self.partial)[-1].name}). "
                f"Continue it with --resume-from {self.partial}, or pass --overwrite to discard it and start again."
            )

    def open(self) -> Path:
        """Create the staging directory (kept when resuming an interrupted run in place)."""
        if self.partial.exists() and not self.resuming:
            if checkpoints_in(self.partial):
                logger.warning("Discarding the interrupted training in %s (--overwrite).", self.partial)
            elif incomplete_checkpoints_in(self.partial):
                logger.warning(
                    "Discarding %s: its only checkpoint was never completely written, so there is nothing to resume.",
                    self.partial,
                )
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def commit(self, *, manifest: bool = True) -> Path:
        """Seal the run with its manifest and move it into place, then give the lock up.

        An overwritten run is moved aside first and removed only once the new one is in place.
        ``manifest=False`` for a folder of runs (a cross-validation), whose runs carry their own.
        """
        relocate_checkpoint_states(self.partial, self.final)  # Trainer's state names the staging folder
        if manifest:
            write_manifest(self.partial)
        previous = None
        with _signals_deferred():  # Ctrl-C between the two renames would hide the previous run
            if self.final.exists():
                previous = self.final.with_name(self.final.name + f".replaced-{os.getpid()}")
                os.replace(self.final, previous)
            os.replace(self.partial, self.final)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        self.release()
        return self.final

    def release(self) -> None:
        """Give the output directory's lock up (done by commit, discard and abandon)."""
        self.lock.release()

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)
        self.release()

    def abandon(self, error: BaseException) -> bool:
        """Clean up after ``error`` ended the run; True when the staging directory is kept to resume.

        Kept: an interruption (KeyboardInterrupt, which SIGTERM becomes under the train command)
        once a complete checkpoint exists, and a staging directory this training resumed from.
        Anything else, including a crash after checkpoints were saved, leaves nothing behind.
        """
        try:
            interrupted = isinstance(error, KeyboardInterrupt)
            if self.resuming or (interrupted and checkpoints_in(self.partial)):
                if self.partial.is_dir():
                    (self.partial / MANIFEST_FILE).unlink(missing_ok=True)  # only a finished run has one
                    return True
                return False
            self.discard()
            return False
        finally:
            self.release()


def run_of_staging(path: str | Path) -> Path | None:
    """``RUN`` for ``RUN.partial`` or a checkpoint inside it; None for anything else.

    Lets ``--resume-from RUN.partial`` finish the interrupted run in place without repeating
    ``--output-dir``.
    """
    candidate = Path(path).expanduser()
    for folder in (candidate, *candidate.parents):
        if folder.name.endswith(PARTIAL_SUFFIX) and len(folder.name) > len(PARTIAL_SUFFIX):
            return folder.with_name(folder.name[: -len(PARTIAL_SUFFIX)])
    return None


def describe_interrupted_run(output_dir: str | Path, interrupt: BaseException | None = None) -> str:
    """What the train command prints after an interruption: where the checkpoint is, how to resume."""
    partial = Path(output_dir).expanduser()
    partial = partial.with_name(partial.name + PARTIAL_SUFFIX)
    cause = interrupt.args[0] if interrupt is not None and interrupt.args and isinstance(interrupt.args[0], str) else ""
    stopped = f"Interrupted ({cause})." if cause else "Interrupted."
    found = checkpoints_in(partial)
    if not found:
        return f"{stopped} No checkpoint had been saved, so nothing was kept; run the command again to start over."
    step = found[-1].name.removeprefix("checkpoint-")
    return (
        f"{stopped} Training stopped at step {step}; its checkpoint is in {found[-1]}. "
        f"To continue, run the same command (same options and seed) with --resume-from {partial} "
        "added: it finishes with the same model an uninterrupted run would have given."
    )


def require_run_directory(path: str | Path) -> Path:
    run = Path(path).expanduser()
    if not run.is_dir():
        hint = ""
        partial = run.with_name(run.name + PARTIAL_SUFFIX)
        if partial.is_dir():
            hint = f" An interrupted run is in {partial}; continue it with --resume-from {partial}."
        raise RunDirectoryError(f"Run directory {run} does not exist.{hint}")
    if not (run / RUN_FILE).is_file():
        raise RunDirectoryError(
            f"{run} is not a complete run directory (no {RUN_FILE}). Give a directory written by 'review-toolkit train'."
        )
    return run
