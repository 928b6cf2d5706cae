"""``soberana render``: the Ray Serve config each site would get, without a cluster.

It plans like ``soberana plan`` (objects that carry a status count as they are), then prints
``{"<site>": <serve config>}``: for each site, the body the operator would ``PUT`` to its
``/api/serve/applications/``. Deployments that cannot be placed, and GPU replicas that Ray cannot
pin to their GPU model, are named on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from soberana.operator.cli import options
from soberana.operator.core.placement import World, current_allocations, place
from soberana.operator.core.render import name_conflicts, render_site_configs, render_warnings
from soberana.operator.manifests import ManifestError, load_manifests


@click.command()
@options.manifest_paths
@click.option(
    "-o",
    "--output",
    type=click.Choice(["json", "yaml"]),
    default="json",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--site",
    "sites",
    multiple=True,
    help="Only this site's config (repeatable). Default: every site.",
)
@options.solver
def render(paths: tuple[Path, ...], output: str, sites: tuple[str, ...], solver: str) -> None:
    """Print the Ray Serve config of every site, for the ModelDeployments and sites found."""
    try:
        manifests = load_manifests(paths)
    except ManifestError as error:
        raise click.ClickException(str(error)) from error
    world = World.from_resources(manifests.sites, manifests.deployments)
    unknown = sorted(set(sites) - {site.name for site in world.sites})
    if unknown:
        raise click.ClickException(f"no InferenceSite named {', '.join(unknown)} was found")
    plan = place(
        world,
        current_allocations(manifests.deployments),
        solver="optimal" if solver == "optimal" else "fast",
    )
    configs = render_site_configs(plan, world)
    if sites:
        configs = {name: config for name, config in configs.items() if name in sites}
    if output == "yaml":
        click.echo(yaml.safe_dump(configs, sort_keys=False), nl=False)
    else:
        click.echo(json.dumps(configs, indent=2))
    for key, deployment in plan.deployments.items():
        if not deployment.placed:
            click.secho(f"warning: {key} is not placed: {deployment.reason}", fg="yellow", err=True)
    for key, why in name_conflicts(world.deployments).items():
        click.secho(f"warning: {key} is {why}", fg="yellow", err=True)
    for warning in [*plan.warnings, *render_warnings(plan, world)]:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
