"""The ``soberana`` command line.

Subcommands are imported only when used, so ``soberana plan`` does not pay for Kopf or Ray and
``soberana --help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

# name -> "module:attribute" of a click command
_COMMANDS: dict[str, str] = {
    "audit": "soberana.operator.cli.audit:audit",
    "demo": "soberana.operator.cli.demo:demo",
    "dev": "soberana.operator.cli.dev:dev",
    "operator": "soberana.operator.cli.operator:operator",
    "plan": "soberana.operator.cli.plan:plan",
    "render": "soberana.operator.cli.render:render",
    "router": "soberana.operator.cli.router:router",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="soberana")
def main() -> None:
    """soberana: place and serve AI models across GPU sites by latency, cost and jurisdiction."""
