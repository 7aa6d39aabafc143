"""The ``review-toolkit`` command line (also ``python -m review_toolkit``)."""

from review_toolkit.cli.commands import cli, main

__all__ = ["cli", "main"]
