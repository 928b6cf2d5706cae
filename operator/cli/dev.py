"""``soberana dev up|down|status``: a local Kubernetes control plane for development and demos."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from soberana.operator.devenv.binaries import BuildError
from soberana.operator.devenv.controlplane import ControlPlane, ControlPlaneError, default_state_dir

_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where PKI, etcd data, logs and PIDs live (default: {default_state_dir()}).",
)


def _crds() -> list[dict[str, object]]:
    from soberana.operator.core.crds import custom_resource_definitions

    return list(custom_resource_definitions())


@click.group()
def dev() -> None:
    """A local control plane (etcd + kube-apiserver, built from source on first use)."""


@dev.command()
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the admin kubeconfig here (default: only inside the state dir).",
)
@_state_dir_option
def up(kubeconfig: Path | None, state_dir: Path | None) -> None:
    """Start etcd and kube-apiserver on loopback (or reuse them) and install soberana's CRDs."""
    plane = ControlPlane(state_dir)
    try:
        path = plane.up(kubeconfig, crds=_crds())
    except (BuildError, ControlPlaneError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    click.echo(f"kubeconfig: {path}")
    click.echo(f"try: kubectl --kubeconfig {path} get crd")


@dev.command()
@_state_dir_option
def down(state_dir: Path | None) -> None:
    """Stop exactly the processes that `dev up` started."""
    ControlPlane(state_dir).down()


@dev.command()
@_state_dir_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def status(state_dir: Path | None, output: str) -> None:
    """Show whether the local control plane runs, where, and with which kubeconfig."""
    report = ControlPlane(state_dir).status()
    if output == "json":
        click.echo(json.dumps(report, indent=2))
        return
    if "etcd" not in report:
        click.echo(f"not running (state dir {report['stateDir']})")
        sys.exit(1)
    click.echo(f"state dir: {report['stateDir']}")
    click.echo(f"running:   {'yes' if report['running'] else 'no'}")
    etcd = report["etcd"]
    click.echo(
        f"etcd:      pid {etcd['pid']} {'up' if etcd['alive'] else 'DOWN'} port {etcd['port']}"
    )
    for name, server in report["apiservers"].items():
        state = "ready" if server["ready"] else ("up, not ready" if server["alive"] else "DOWN")
        click.echo(f"apiserver: {name} pid {server['pid']} {state} {server['url']}")
        click.echo(f"           kubeconfig {server['kubeconfig']}")
    if not report["running"]:
        sys.exit(1)
