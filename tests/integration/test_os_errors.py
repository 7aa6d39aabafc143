"""Operating-system failures in train, predict, evaluate and compare: one ``Error:`` line naming the
path, the cause and what to do; nothing half-written left behind, nothing of the user's touched.

Paths are real where they can be made real as root (a path under a regular file, ``/proc``, a
``RUN.partial`` that is a file or a link, a read error of ``/proc/self/mem``); a full disk is a fault
injected at the boundary: ``os.replace`` raising ENOSPC, as the kernel would.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_one_error_line

from review_toolkit.cli import cli
from review_toolkit.runs.manifest import check_run_integrity

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_SPACE = "No space left on device"


def train(tiny_bert: str, data: Path, output: str | Path, cache: Path, *extra: str):
    return CliRunner().invoke(cli, [
        "train", "--backbone", "bert", "--model", tiny_bert, "--method", "frozen", "--head", "logreg",
        "--data", str(data), "--output-dir", str(output), "--cache-dir", str(cache), "--max-length", "32",
        "--quiet", *extra,
    ])  # fmt: skip


@pytest.fixture
def disk_full_under(monkeypatch):
    """Make every rename of a file below ``root`` fail with ENOSPC (returns a setter for root)."""
    real_replace = os.replace
    roots: list[Path] = []

    def replace(source, target, *args, **kwargs):
        if any(str(source).startswith(str(root)) for root in roots):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source), None, str(target))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return roots.append


def test_output_dir_under_a_regular_file(tiny_bert, small_reviews, tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder", encoding="utf-8")
    result = train(tiny_bert, small_reviews, blocker / "run", tmp_path / "cache")
    assert_one_error_line(result, f"--output-dir {blocker / 'run'}", f"{blocker} is a file, not a folder")
    assert blocker.read_text(encoding="utf-8") == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]


def test_output_dir_in_proc(tiny_bert, small_reviews, tmp_path):
    result = train(tiny_bert, small_reviews, "/proc/review-toolkit-run", tmp_path / "cache")
    assert_one_error_line(result, "--output-dir /proc/review-toolkit-run", "the folder /proc is not writable")


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_staging_path_that_is_not_a_staging_folder_is_left_alone(tiny_bert, small_reviews, tmp_path, kind):
    output = tmp_path / "run"
    partial = tmp_path / "run.partial"
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("mine", encoding="utf-8")
    if kind == "file":
        partial.write_text("mine too", encoding="utf-8")
    else:
        partial.symlink_to(target)
    for extra in ((), ("--overwrite",), ("--resume-from", str(partial))):
        result = train(tiny_bert, small_reviews, output, tmp_path / "cache", *extra)
        assert_one_error_line(result, str(partial), "it is left alone")
    assert (target / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert partial.is_symlink() if kind == "symlink" else partial.read_text(encoding="utf-8") == "mine too"
    assert not output.exists() and not (tmp_path / ".run.lock").exists()


def test_full_disk_while_training_leaves_nothing(tiny_bert, small_reviews, tmp_path, disk_full_under):
    output = tmp_path / "out" / "run"
    disk_full_under(output.parent)
    result = train(tiny_bert, small_reviews, output, tmp_path / "cache")
    assert_one_error_line(result, NO_SPACE, str(output.parent), "Free some space")
    assert list(output.parent.iterdir()) == []  # no run, no .partial, no lock file


def test_full_disk_while_predicting_leaves_no_partial_output(tiny_frozen_run, tmp_path, disk_full_under):
    output = tmp_path / "scored.csv"
    disk_full_under(tmp_path)
    result = CliRunner().invoke(cli, ["predict", "--run", str(tiny_frozen_run), "--text", "fine", "--output", str(output)])
    assert_one_error_line(result, NO_SPACE, str(output), "Free some space")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_evaluating_keeps_the_run_intact(tiny_frozen_run, tmp_path, disk_full_under):
    run = tmp_path / "run"
    shutil.copytree(tiny_frozen_run, run)
    disk_full_under(run / "evaluation")
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(run), "--quiet"])
    assert_one_error_line(result, NO_SPACE, str(run / "evaluation"), "Free some space")
    assert check_run_integrity(run) == []
    assert not (run / "evaluation").exists() or list((run / "evaluation").iterdir()) == []


def test_unwritable_destinations_of_predict_evaluate_and_compare(tiny_frozen_run, tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder", encoding="utf-8")
    invocations = {
        "predict": (["predict", "--run", str(tiny_frozen_run), "--text", "fine", "--output", "/proc/scored.csv"],
                    ["--output /proc/scored.csv", "the folder /proc is not writable"]),
        "evaluate": (["evaluate", "--run", str(tiny_frozen_run), "--output-dir", str(blocker / "eval")],
                     [f"{blocker} is a file, not a folder"]),
        "compare": (["compare", str(tiny_frozen_run), "--output-dir", str(blocker / "cmp")],
                    [f"{blocker} is a file, not a folder"]),
    }  # fmt: skip
    for arguments, fragments in invocations.values():
        assert_one_error_line(CliRunner().invoke(cli, arguments), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]
    assert check_run_integrity(tiny_frozen_run) == []


def test_config_that_cannot_be_read_names_the_file(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--config", "/proc/self/mem", "--output-dir", str(tmp_path / "run")])
    assert_one_error_line(result, "Input/output error: /proc/self/mem")
    assert list(tmp_path.iterdir()) == []
