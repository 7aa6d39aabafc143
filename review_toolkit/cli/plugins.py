"""``review-toolkit plugins``: every installed plugin and whether it loads."""

from __future__ import annotations

import click


@click.command()
def plugins() -> None:
    """List every installed plugin: kind, name, distribution, version and description."""
    from review_toolkit.registry import list_plugins

    rows = list_plugins()
    if not rows:
        click.echo("No plugins installed. Reinstall review_toolkit to get the built-in ones.")
        return
    header = ("KIND", "NAME", "DISTRIBUTION", "VERSION", "DESCRIPTION")
    table = [header]
    for row in rows:
        status = "BLOCKED" if row.blocked else (f"BROKEN: {row.error}" if row.error else row.description)
        table.append((row.source.kind, row.source.name, row.source.distribution, row.source.version, status))
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line[:4], widths)) + "  " + line[4])
