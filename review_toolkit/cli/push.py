"""``review-toolkit push``: upload a run to the Hugging Face Hub."""

from __future__ import annotations

import click


@click.command()
@click.option("--run", "run_dir", required=True, help="Run directory written by 'train'.")
@click.option("--repo-id", required=True, help="Model repository on the Hub, OWNER/NAME (created if missing).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--token", envvar="HF_TOKEN", help="Hub token with write access (default: HF_TOKEN, else the saved login).")
@click.option("--message", "commit_message", help="Commit message (default: 'Upload run NAME').")
@click.option("--dry-run", is_flag=True, help="List the files that would be uploaded, upload nothing.")
def push(run_dir: str, repo_id: str, private: bool, token: str | None, commit_message: str | None, dry_run: bool) -> None:
    """Upload a run (every file its manifest lists, the manifest and the model card) to the Hub.

    The run is verified first; Trainer checkpoints are not uploaded. A downloaded copy loads with
    `load_run` and `predict --run` like the original.
    """
    from review_toolkit.runs.publish import check_repo_id, files_to_push, push_run

    check_repo_id(repo_id)
    if dry_run:
        for name in files_to_push(run_dir):
            click.echo(name)
        return
    result = push_run(run_dir, repo_id, private=private, token=token, commit_message=commit_message)
    click.echo(f"{len(result.files)} files pushed to {result.repo_id}" + (f": {result.url}" if result.url else ""))
