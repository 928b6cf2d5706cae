"""Options that several commands share, declared once."""

from __future__ import annotations

from pathlib import Path

import click

manifest_paths = click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A YAML file or a directory of them (repeatable).",
)

solver = click.option(
    "--solver",
    type=click.Choice(["fast", "optimal"]),
    default="fast",
    show_default=True,
    help="fast: the operator's heuristic. optimal: an exact MILP (slower).",
)
