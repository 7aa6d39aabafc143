"""Publishing a run to the Hugging Face Hub: exactly the files its manifest lists, and its card.

The upload itself is ``huggingface_hub``'s (``create_repo`` + one ``create_commit``); this module
decides what goes up: the run is verified first (a changed or unlisted file refuses the push),
Trainer checkpoints stay behind, and the commit holds each listed file, the manifest and the
model card (``README.md``), so what lands on the Hub loads with ``load_run`` after a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from review_toolkit.errors import ConfigError, ReviewToolkitError, RunDirectoryError
from review_toolkit.runs.layout import require_run_directory
from review_toolkit.runs.manifest import MANIFEST_FILE, compute_manifest, verify_run_directory

CARD_FILE = "README.md"


@dataclass
class PushResult:
    repo_id: str
    files: list[str]
    url: str | None


def check_repo_id(repo_id: str) -> None:
    if repo_id.count("/") != 1 or not all(part.strip() for part in repo_id.split("/")):
        raise ConfigError(f"--repo-id {repo_id!r} must be OWNER/NAME, e.g. my-team/fake-review-detector.")


def files_to_push(run: str | Path) -> list[str]:
    """The run's files as the Hub will hold them (relative POSIX paths), after verifying the run."""
    directory = require_run_directory(run)
    verify_run_directory(directory)
    files = sorted([*compute_manifest(directory)["files"], MANIFEST_FILE])
    if CARD_FILE not in files:
        raise RunDirectoryError(f"{directory} has no model card ({CARD_FILE}); train or evaluate it again to write one.")
    return files


def push_run(
    run: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    api: Any = None,
) -> PushResult:
    """Create ``repo_id`` (a model repository) if needed and upload the run in one commit.

    ``api`` is a ``huggingface_hub.HfApi`` (its endpoint and token); the default reads them from
    the environment (``HF_ENDPOINT``, ``HF_TOKEN``) as the library does.
    """
    check_repo_id(repo_id)
    directory = require_run_directory(run)
    files = files_to_push(directory)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name)) for name in files]
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            operations,
            repo_type="model",
            commit_message=commit_message or f"Upload run {directory.name}",
        )
    except ReviewToolkitError:
        raise
    except Exception as error:  # the library's HTTP and auth errors, told in one line
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise RunDirectoryError(
            f"Could not push {directory} to {repo_id}: {type(error).__name__}: {first_line}. Check the repository "
            "id, that HF_TOKEN (or `hf auth login`) allows writing to it, and that the Hub is reachable."
        ) from None
    return PushResult(repo_id, files, getattr(commit, "commit_url", None))
