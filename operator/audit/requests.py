"""The router's audit: a record for every routed request, and what to do when none can be kept.

:class:`RequestAudit` is wired into a :class:`~soberana.serving.router.app.Router`: its
:meth:`~RequestAudit.on_outcome` queues each request's outcome (the record is built on the
writer's thread), and its :meth:`~RequestAudit.admission` makes the router refuse requests with
503 ``audit_unavailable`` while records cannot be written (``failure="closed"``, the default),
or lets them through, counted in ``soberana_audit_unaudited_requests_total`` and logged as an
alarm by the writer (``failure="open"``). Its metrics join the router's ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from soberana.operator.audit.chain import Signer
from soberana.operator.audit.writer import AuditWriter, Exporter, WriterSettings
from soberana.operator.core.api import Residency
from soberana.serving.router.app import RESIDENCY_HEADER, RequestOutcome, Router

FailureMode = Literal["closed", "open"]
FAILURE_MODES: tuple[FailureMode, ...] = ("closed", "open")


class RequestAudit:
    def __init__(
        self, writer: AuditWriter, router: Router, failure: FailureMode = "closed"
    ) -> None:
        if failure not in FAILURE_MODES:
            raise ValueError(f"audit failure mode must be closed or open, not {failure!r}")
        self.writer = writer
        self.failure = failure
        self.unaudited = 0  # requests let through while records could not be kept (fail open)
        self._router = router

    def attach(self) -> None:
        """Hook into the router: outcomes, admission and metrics."""
        router = self._router
        router.on_outcome = self.on_outcome
        router.admission = self.admission
        router.metrics.registry.register(_AuditMetrics(self))

    def on_outcome(self, outcome: RequestOutcome) -> None:
        table = self._router.table
        tried = tuple(
            (name, site.jurisdiction if (site := table.sites.get(name)) is not None else None)
            for name in outcome.tried
        )
        residency = outcome.model_residency
        if residency is None and outcome.model is not None:  # refused before the decision
            model = table.models.get(outcome.model)
            residency = model.residency if model is not None else None
        self.writer.submit(request_record, (outcome, tried, residency), outcome.received_at)

    def admission(self) -> str | None:
        refusal = self.writer.refusal()
        if refusal is None:
            return None
        if self.failure == "closed":
            return f"{refusal}; the router refuses requests until it can keep their records"
        self.unaudited += 1
        return None


Tried = tuple[tuple[str, str | None], ...]  # (site, its jurisdiction) for each site tried


def request_record(item: tuple[RequestOutcome, Tried, Residency | None]) -> dict[str, Any]:
    """The audit record of one request: who, which model, where it could and did go; never what."""
    outcome, tried, residency = item
    restrictions: list[dict[str, Any]] = []
    if residency is not None:
        restrictions.append(
            {
                "source": "model",
                "allowed": sorted(residency.allowed_jurisdictions),
                "denied": sorted(residency.denied_jurisdictions),
            }
        )
    for restriction in outcome.restrictions:
        source = "header" if restriction.source == RESIDENCY_HEADER else "tenant"
        restrictions.append({"source": source, "allowed": sorted(restriction.jurisdictions)})
    return {
        "kind": "request",
        "id": outcome.request_id,
        "tenant": outcome.tenant,
        "model": outcome.model,
        "region": outcome.client_region,
        "restrictions": restrictions,
        "site": outcome.site,
        "jurisdiction": outcome.site_jurisdiction,
        "tried": [{"site": site, "jurisdiction": jurisdiction} for site, jurisdiction in tried],
        "status": outcome.status,
        "refusal": outcome.refusal,
        "bytes_in": outcome.request_bytes,
        "bytes_out": outcome.response_bytes,
    }


class _AuditMetrics(Collector):
    def __init__(self, audit: RequestAudit) -> None:
        self._audit = audit

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        writer = self._audit.writer
        yield CounterMetricFamily(
            "soberana_audit_records", "Audit records written.", writer.written
        )
        yield CounterMetricFamily(
            "soberana_audit_dropped_records",
            "Audit records dropped because the queue was full (each gap is also recorded).",
            writer.dropped,
        )
        yield CounterMetricFamily(
            "soberana_audit_write_failures",
            "Failed attempts to write audit records.",
            writer.write_failures,
        )
        yield CounterMetricFamily(
            "soberana_audit_unaudited_requests",
            "Requests let through while audit records could not be kept (fail open).",
            self._audit.unaudited,
        )
        yield GaugeMetricFamily(
            "soberana_audit_failing",
            "1 while audit records cannot be written (or the queue is full), else 0.",
            0.0 if writer.refusal() is None else 1.0,
        )
        yield GaugeMetricFamily(
            "soberana_audit_queued_records", "Audit records waiting to be written.", writer.queued
        )


@contextmanager
def router_audit(
    router: Router,
    settings: WriterSettings,
    signer: Signer,
    failure: FailureMode = "closed",
    otlp_endpoint: str | None = None,
) -> Iterator[RequestAudit]:
    """Audit ``router``'s requests while the context lasts; on the way out, seal the log."""
    exporters: list[Exporter] = []
    if otlp_endpoint is not None:
        from soberana.operator.audit.otlp import OtlpExporter

        exporters.append(OtlpExporter(otlp_endpoint, settings.log))
    writer = AuditWriter(settings, signer, exporters)
    writer.start()
    try:
        audit = RequestAudit(writer, router, failure)
        audit.attach()
        yield audit
    finally:
        writer.close()
