"""``soberana demo``: the end-to-end demo on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--once", is_flag=True, help="Run every step, stop everything, exit 0 only if all worked."
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo keeps its control plane, models and logs.",
)
def demo(once: bool, state_dir: Path | None) -> None:
    """Sites, placement, serving, routing and failover, live on this machine.

    Starts the local control plane (unless KUBECONFIG names a cluster), three Ray clusters as
    sites (one a CPU-only edge box), the operator and the router; applies examples/demo; shows
    the placement and why; sends real requests through the router and streams a chat with
    SmolLM2 (llama.cpp) with the openai client; stops one site and shows traffic move while
    residency holds.
    """
    from soberana.operator.devenv.demo import default_state_dir, run

    ok = run(state_dir or default_state_dir(), once=once, say=click.echo)
    sys.exit(0 if ok else 1)
