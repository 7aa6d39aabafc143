"""The ``review-toolkit`` command line (also ``python -m review_toolkit``): one module per command."""

from review_toolkit.cli.group import cli, main

__all__ = ["cli", "main"]
