"""``soberana router``: the global router, in front of every site."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import click

from soberana.operator.cli import options
from soberana.serving.router.app import REGION_ID, Router, RouterSettings
from soberana.serving.router.forward import ForwardSettings
from soberana.serving.router.server import ServerOptions, run

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _region(value: str | None) -> str | None:
    if value is not None and not REGION_ID.match(value):
        raise click.BadParameter(f"{value!r} is not a region id such as br-southeast")
    return value


@click.command("router")
@click.option(
    "--routes",
    type=_FILE,
    default=None,
    metavar="FILE",
    help="Static routing table (YAML: sites and models). Without it, the table is read from "
    "the API server's InferenceSites and ModelDeployments and kept current.",
)
@click.option(
    "--kubeconfig",
    type=_FILE,
    default=None,
    help="Kubeconfig for the API server (default: the in-cluster account, $KUBECONFIG, or "
    "~/.kube/config).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--region",
    default=None,
    callback=lambda _ctx, _param, value: _region(value),
    help="Client region of requests without an X-Soberana-Region header, such as br-southeast.",
)
@click.option(
    "--api-keys",
    type=_FILE,
    default=None,
    metavar="FILE",
    help="Require a bearer API key listed in FILE (YAML: tenant, key or sha256, residency). "
    "Reloaded when it changes.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 16),
    default=ForwardSettings.max_attempts,
    show_default=True,
    help="Most sites one request is tried on.",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0.01),
    default=ForwardSettings.connect_timeout_s,
    show_default=True,
    help="Seconds to connect to a site before trying the next.",
)
@click.option(
    "--response-timeout",
    type=click.FloatRange(min=0.01),
    default=ForwardSettings.response_timeout_s,
    show_default=True,
    help="Seconds a site may stay silent (before its headers or between chunks).",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0.01),
    default=ForwardSettings.request_timeout_s,
    show_default=True,
    help="Seconds a request may take until a site's response begins, every attempt included "
    "(then 504).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0.01),
    default=RouterSettings.header_timeout_s,
    show_default=True,
    help="Seconds a client has to send a request's head (then 408).",
)
@click.option(
    "--keepalive-timeout",
    type=click.FloatRange(min=0.01),
    default=RouterSettings.keepalive_s,
    show_default=True,
    help="Seconds an idle client connection is kept open.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=RouterSettings.max_connections,
    show_default=True,
    help="Client connections held at once; more are answered 503 and closed.",
)
@click.option(
    "--max-openai-body-bytes",
    type=click.IntRange(0),
    default=RouterSettings.max_openai_body_bytes,
    show_default=True,
    help="Largest body of a chat or text completion request (then 413).",
)
@click.option(
    "--max-model-api-body-bytes",
    type=click.IntRange(0),
    default=RouterSettings.max_model_api_body_bytes,
    show_default=True,
    help="Largest body of a request to a model's other APIs, /models/... (then 413).",
)
@click.option(
    "--max-response-header-bytes",
    type=click.IntRange(256),
    default=ForwardSettings.max_response_header_line_bytes,
    show_default=True,
    help="Longest status or header line a site may send; with at most "
    f"{ForwardSettings.max_response_headers} header lines, this bounds a site's response head.",
)
@click.option(
    "--failure-threshold",
    type=click.IntRange(1),
    default=RouterSettings.failure_threshold,
    show_default=True,
    help="Consecutive failures that open a site's circuit breaker.",
)
@click.option(
    "--open-for",
    type=click.FloatRange(min=0.01),
    default=RouterSettings.open_for_s,
    show_default=True,
    help="Seconds an open breaker waits before letting one probe request through.",
)
@click.option(
    "--otlp-endpoint",
    envvar="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    default=None,
    metavar="URL",
    help="Export traces over OTLP/HTTP to URL, such as http://collector:4318/v1/traces. "
    "Default: export nothing.",
)
@click.option(
    "--audit-failure",
    type=click.Choice(["closed", "open"]),
    default="closed",
    show_default=True,
    help="While audit records cannot be written: refuse requests with 503 (closed), or serve "
    "them, counted and logged as an alarm (open).",
)
@options.audit_log("every request", "this router process")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def router(
    routes: Path | None,
    kubeconfig: Path | None,
    host: str,
    port: int,
    region: str | None,
    api_keys: Path | None,
    max_attempts: int,
    connect_timeout: float,
    response_timeout: float,
    request_timeout: float,
    header_timeout: float,
    keepalive_timeout: float,
    max_connections: int,
    max_openai_body_bytes: int,
    max_model_api_body_bytes: int,
    max_response_header_bytes: int,
    failure_threshold: int,
    open_for: float,
    otlp_endpoint: str | None,
    audit_dir: Path | None,
    audit_signing_key: Path | None,
    audit_failure: str,
    audit_log_name: str | None,
    audit_otlp_endpoint: str | None,
    verbose: bool,
) -> None:
    """Send each request to the best compliant, healthy site, never across a jurisdiction."""
    if routes is not None and kubeconfig is not None:
        raise click.UsageError("give --routes or --kubeconfig, not both")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    forward = ForwardSettings(
        max_attempts=max_attempts,
        connect_timeout_s=connect_timeout,
        response_timeout_s=response_timeout,
        request_timeout_s=request_timeout,
        max_response_header_line_bytes=max_response_header_bytes,
    )
    settings = RouterSettings(
        region=region,
        forward=forward,
        failure_threshold=failure_threshold,
        open_for_s=open_for,
        header_timeout_s=header_timeout,
        keepalive_s=keepalive_timeout,
        max_connections=max_connections,
        max_openai_body_bytes=max_openai_body_bytes,
        max_model_api_body_bytes=max_model_api_body_bytes,
    )
    run(
        ServerOptions(
            host=host,
            port=port,
            routes=routes,
            kubeconfig=kubeconfig,
            api_keys=api_keys,
            otlp_endpoint=otlp_endpoint,
            settings=settings,
            extensions=_audit(
                audit_dir, audit_signing_key, audit_failure, audit_log_name, audit_otlp_endpoint
            ),
        )
    )


def _audit(
    directory: Path | None,
    key: Path | None,
    failure: str,
    log_name: str | None,
    otlp_endpoint: str | None,
) -> tuple[Callable[[Router], AbstractContextManager[object]], ...]:
    writer = options.audit_writer(directory, key, log_name)
    if writer is None:
        return ()
    from soberana.operator.audit.requests import FailureMode, router_audit

    settings, signer = writer
    mode: FailureMode = "open" if failure == "open" else "closed"
    return (lambda router: router_audit(router, settings, signer, mode, otlp_endpoint),)
