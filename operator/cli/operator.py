"""``soberana operator``: run the Kopf operator against a cluster."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import click

from soberana.operator.cli import options
from soberana.operator.controller.config import LeaderElection, OperatorConfig, PlacementChange
from soberana.operator.core.placement import PlacementOptions, Solver


@click.command("operator")
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the in-cluster account).",
)
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch ModelDeployments only in this namespace (repeatable; globs allowed). "
    "Default: all namespaces.",
)
@click.option("--solver", type=click.Choice(["fast", "optimal"]), default="fast", show_default=True)
@click.option(
    "--move-threshold",
    type=click.FloatRange(0, 1, max_open=True),
    default=PlacementOptions.move_threshold,
    show_default=True,
    help="A running deployment moves only when the gain exceeds this fraction.",
)
@click.option(
    "--debounce",
    type=click.FloatRange(0),
    default=OperatorConfig.debounce_s,
    show_default=True,
    help="Seconds to collect changes before re-planning.",
)
@click.option(
    "--liveness",
    "liveness_endpoint",
    default=None,
    metavar="URL",
    help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option(
    "--placement-only",
    is_flag=True,
    help="Place and write statuses, but deploy nothing to sites and do not probe them.",
)
@click.option(
    "--probe-interval",
    type=click.FloatRange(min=0.1),
    default=OperatorConfig.probe_interval_s,
    show_default=True,
    help="Seconds between looks at each site.",
)
@click.option(
    "--unhealthy-after",
    type=click.FloatRange(min=0),
    default=OperatorConfig.unhealthy_after_s,
    show_default=True,
    help="Seconds a site may stay unreachable before its deployments are placed elsewhere.",
)
@click.option(
    "--secrets-namespace",
    envvar="SOBERANA_NAMESPACE",
    default=OperatorConfig.secrets_namespace,
    show_default=True,
    help="Namespace of the Secrets that sites refer to: the operator's own.",
)
@click.option(
    "--leader-elect",
    is_flag=True,
    help="Run as one of several replicas: only the holder of the Lease soberana-operator (in "
    "--secrets-namespace) writes; the others wait to take over.",
)
@click.option(
    "--leader-elect-lease-duration",
    type=click.FloatRange(min=1),
    default=LeaderElection.lease_duration_s,
    show_default=True,
    help="Seconds a standby waits after the last renewal it saw before taking the Lease.",
)
@click.option(
    "--leader-elect-renew-deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=LeaderElection.renew_deadline_s,
    show_default=True,
    help="Seconds the leader keeps writing without a successful renewal; then it stops.",
)
@click.option(
    "--leader-elect-retry-period",
    type=click.FloatRange(min=0, min_open=True),
    default=LeaderElection.retry_period_s,
    show_default=True,
    help="Seconds between tries to acquire or renew the Lease.",
)
@click.option(
    "--leader-elect-identity",
    default=None,
    metavar="NAME",
    help="This replica's name in the Lease (default: <hostname>_<uuid>).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (all interfaces) at /metrics.",
)
@options.audit_log("every placement change", "this replica")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.option("--debug", is_flag=True, help="Log everything, Kopf's internals included.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
def operator(
    kubeconfig: Path | None,
    namespaces: tuple[str, ...],
    solver: Solver,
    move_threshold: float,
    debounce: float,
    liveness_endpoint: str | None,
    placement_only: bool,
    probe_interval: float,
    unhealthy_after: float,
    secrets_namespace: str,
    leader_elect: bool,
    leader_elect_lease_duration: float,
    leader_elect_renew_deadline: float,
    leader_elect_retry_period: float,
    leader_elect_identity: str | None,
    metrics_port: int | None,
    audit_dir: Path | None,
    audit_signing_key: Path | None,
    audit_log_name: str | None,
    audit_otlp_endpoint: str | None,
    verbose: bool,
    debug: bool,
    quiet: bool,
) -> None:
    """Place ModelDeployments on InferenceSites and keep their status true."""
    import asyncio

    import kopf

    from soberana.operator.controller.handlers import build_registry

    election = None
    if leader_elect:
        try:
            election = LeaderElection(
                **({"identity": leader_elect_identity} if leader_elect_identity else {}),
                lease_duration_s=leader_elect_lease_duration,
                renew_deadline_s=leader_elect_renew_deadline,
                retry_period_s=leader_elect_retry_period,
            )
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--leader-elect-*") from error
    audit = contextlib.ExitStack()  # sealed after Kopf stops; a crash leaves it for the next start
    on_placement = _audit(audit, audit_dir, audit_signing_key, audit_log_name, audit_otlp_endpoint)
    config = OperatorConfig(
        solver=solver,
        debounce_s=debounce,
        deploy=not placement_only,
        probe_interval_s=probe_interval,
        unhealthy_after_s=unhealthy_after,
        secrets_namespace=secrets_namespace,
        placement=PlacementOptions(move_threshold=move_threshold),
        leader_election=election,
        metrics_port=metrics_port,
        on_placement=on_placement,
    )
    kopf.configure(verbose=verbose, debug=debug, quiet=quiet)
    # the API client logs whole response bodies at DEBUG, Secrets included: never let it
    logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    registry_kubeconfig = str(kubeconfig) if kubeconfig else None
    lost = False

    async def run() -> None:
        # losing the Lease stops Kopf (its cleanup runs), then the process with an error, as
        # controller-runtime's manager does: the pod's restart makes it a candidate again (an
        # asyncio.Event: a thread-side flag would keep a thread waiting on it after Kopf stops)
        stop = asyncio.Event()

        def on_lost() -> None:
            nonlocal lost
            lost = True
            stop.set()

        await kopf.operator(
            registry=build_registry(config, registry_kubeconfig, on_lost=on_lost),
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=liveness_endpoint,
            standalone=True,
            stop_flag=stop,
        )

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(run())
    audit.close()
    if lost:
        raise click.ClickException("leader election lost: stopped writing and exiting")


def _audit(
    stack: contextlib.ExitStack,
    directory: Path | None,
    key: Path | None,
    log_name: str | None,
    otlp_endpoint: str | None,
) -> Callable[[PlacementChange], None] | None:
    writer = options.audit_writer(directory, key, log_name)
    if writer is None:
        return None
    from soberana.operator.audit.placements import operator_audit

    settings, signer = writer
    return stack.enter_context(operator_audit(settings, signer, otlp_endpoint))
