"""``soberana plan``: where the ModelDeployments in some YAML files would run, without a cluster."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from soberana.operator.cli import options
from soberana.operator.core.placement import (
    Change,
    Plan,
    SiteUsage,
    World,
    current_allocations,
    place,
)
from soberana.operator.core.render import render_warnings
from soberana.operator.manifests import ManifestError, load_manifests


@click.command()
@options.manifest_paths
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for programs.",
)
@options.solver
def plan(paths: tuple[Path, ...], output: str, solver: str) -> None:
    """Show where ModelDeployments would run on InferenceSites, without a cluster.

    Reads both kinds from YAML files and directories (other objects are skipped). An object with
    a status, as `kubectl get -o yaml` writes it, counts as it is: a site whose Ready condition
    is False is unhealthy, and status.placements is what runs now: the plan then says which
    deployments it keeps and which it moves.
    """
    try:
        manifests = load_manifests(paths)
    except ManifestError as error:
        raise click.ClickException(str(error)) from error
    world = World.from_resources(manifests.sites, manifests.deployments)
    result = place(
        world,
        current_allocations(manifests.deployments),
        solver="optimal" if solver == "optimal" else "fast",
    )
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(render_table(result, world))
    # GPU replicas Ray cannot pin to their GPU model (the render would leave them unpinned)
    for warning in [*result.warnings, *render_warnings(result, world)]:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


def render_table(result: Plan, world: World) -> str:
    """The plan for people: deployments, why not other sites, and site utilisation."""
    return "\n\n".join(
        section
        for section in (
            _deployments(result),
            _rejections(result),
            _sites(result, world),
            _summary(result),
        )
        if section
    )


def _deployments(result: Plan) -> str:
    # POOL: the GPU model the replicas use, or cpu for CPU-only replicas
    rows = [["DEPLOYMENT", "PLACED", "COST/H", "SITE", "REPLICAS", "POOL", "REGIONS"]]
    for key, deployment in result.deployments.items():
        if not deployment.placed:
            rows.append([key, "no", "-", deployment.reason or ""])
        for number, entry in enumerate(deployment.placements):
            first = number == 0
            rows.append(
                [
                    key if first else "",
                    _PLACED[deployment.change] if first else "",
                    f"{deployment.hourly_cost:.2f}" if first else "",
                    entry.site,
                    str(entry.replicas),
                    entry.gpu_model,
                    ", ".join(entry.regions) or "-",
                ]
            )
    lines = _align(rows)
    lines[0] = [click.style(cell, bold=True) for cell in lines[0]]
    for cells in lines[1:]:
        placed = cells[1].strip()
        if placed:
            cells[1] = click.style(cells[1], fg=_COLOURS[placed])
    return _joined(lines)


_PLACED = {Change.PLACED: "yes", Change.UNCHANGED: "kept", Change.MOVED: "moved"}
_COLOURS = {"yes": "green", "kept": "green", "moved": "yellow", "no": "red"}


def _rejections(result: Plan) -> str:
    blocks = []
    for key, deployment in result.deployments.items():
        if deployment.rejected:
            width = max(len(site) for site in deployment.rejected)
            lines = [f"  {site:<{width}}  {why}" for site, why in deployment.rejected.items()]
            blocks.append("\n".join([key, *lines]))
    if not blocks:
        return ""
    return "\n".join([click.style("WHY NOT OTHER SITES", bold=True), *blocks])


def _sites(result: Plan, world: World) -> str:
    specs = {site.name: site for site in world.sites}
    rows = [
        [
            "SITE",
            "TIER",
            "REGION",
            "JURISDICTION",
            "GPUS",
            "CPUS",
            "MEMORY",
            "USED",
            "COST/H",
            "DEPLOYMENTS",
        ]
    ]
    for name, usage in result.sites.items():
        site = specs[name]
        state = " (cordoned)" if site.spec.cordoned else "" if site.healthy else " (unhealthy)"
        rows.append(
            [
                name + state,
                site.spec.tier.value,
                site.spec.region,
                site.spec.jurisdiction,
                f"{usage.gpus_allocated}/{usage.gpus_total}" if usage.gpus_total else "-",
                f"{usage.cpus_allocated}/{usage.cpus_total}" if usage.cpus_total else "-",
                f"{usage.memory_gib_allocated:g}/{usage.memory_gib_total:g} GiB"
                if usage.cpus_total
                else "-",
                f"{_used(usage):.0%}",
                f"{usage.hourly_cost:.2f}",
                str(usage.deployments),
            ]
        )
    lines = _align(rows)
    lines[0] = [click.style(cell, bold=True) for cell in lines[0]]
    return _joined(lines)


def _used(usage: SiteUsage) -> float:
    """The share of the site's busiest resource in use: GPUs, cores or CPU pool memory."""
    shares = [
        allocated / total
        for allocated, total in (
            (usage.gpus_allocated, usage.gpus_total),
            (usage.cpus_allocated, usage.cpus_total),
            (usage.memory_gib_allocated, usage.memory_gib_total),
        )
        if total
    ]
    return max(shares, default=0.0)


def _summary(result: Plan) -> str:
    placed = sum(deployment.placed for deployment in result.deployments.values())
    cost = sum(deployment.hourly_cost for deployment in result.deployments.values())
    return (
        f"{placed} of {len(result.deployments)} deployments placed, {cost:.2f}/h in total "
        f"(solver: {result.solver})"
    )


def _align(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """Pad cells into left-aligned columns; a row shorter than the header runs its last cell on."""
    widths = [
        max(len(row[column]) for row in rows if len(row) > column + 1)
        for column in range(len(rows[0]) - 1)
    ]
    return [
        [cell.ljust(widths[column]) for column, cell in enumerate(row[:-1])] + [row[-1]]
        for row in rows
    ]


def _joined(lines: list[list[str]]) -> str:
    return "\n".join("  ".join(cells).rstrip() for cells in lines)
