"""The operator's audit: a record for every placement change, in the same kind of chained log.

Wired as :attr:`~soberana.operator.controller.config.OperatorConfig.on_placement`: each Placed,
Moved or Unplaceable change (the deployment, its old and new sites with their jurisdictions, and
the Event's message as the reason) is queued for the writer's thread. The operator never stops
placing for its audit log: a log that cannot be written is an alarm in the operator's log and
the records wait, bounded, in memory (see :mod:`.writer`); the Events stay in Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from soberana.operator.audit.chain import Signer
from soberana.operator.audit.writer import AuditWriter, Exporter, WriterSettings
from soberana.operator.controller.config import PlacementChange


def placement_record(change: PlacementChange) -> dict[str, Any]:
    def shares(placements: tuple[tuple[str, int], ...]) -> list[dict[str, Any]]:
        return [
            {"site": site, "jurisdiction": change.jurisdictions.get(site), "replicas": replicas}
            for site, replicas in placements
        ]

    return {
        "kind": "placement",
        "deployment": change.deployment,
        "event": change.reason,
        "reason": change.message,
        "old": shares(change.old),
        "new": shares(change.new),
    }


@contextmanager
def operator_audit(
    settings: WriterSettings, signer: Signer, otlp_endpoint: str | None = None
) -> Iterator[Callable[[PlacementChange], None]]:
    """The hook that records placement changes, while the context lasts; then the log is sealed."""
    exporters: list[Exporter] = []
    if otlp_endpoint is not None:
        from soberana.operator.audit.otlp import OtlpExporter

        exporters.append(OtlpExporter(otlp_endpoint, settings.log))
    writer = AuditWriter(settings, signer, exporters)
    writer.start()

    def record(change: PlacementChange) -> None:
        writer.submit(placement_record, change)

    try:
        yield record
    finally:
        writer.close()
