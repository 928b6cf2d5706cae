"""Optionally, every audit line also as an OpenTelemetry log record, sent over OTLP/HTTP.

A copy for a collector elsewhere (a SIEM, a log store): the line is the record's body, verbatim,
so the chain can be checked from there too, and checkpoints leave the router host as soon as they
are made. Best effort: the segment files stay the evidence; an export that fails is logged by the
SDK and does not stop the writer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from soberana.operator.audit.chain import FORMAT


class OtlpExporter:
    def __init__(self, endpoint: str, log_name: str) -> None:
        self._provider = LoggerProvider(
            resource=Resource.create(
                {"service.name": "soberana-audit", "soberana.audit.log": log_name}
            )
        )
        self._provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint))
        )
        self._logger = self._provider.get_logger("soberana.audit", str(FORMAT))

    def export(self, lines: Sequence[bytes]) -> None:
        for line in lines:
            text = line.decode()
            kind = json.loads(text).get("kind", "")
            self._logger.emit(
                body=text,
                event_name=f"soberana.audit.{kind}",
                attributes={"soberana.audit.kind": kind},
            )

    def close(self) -> None:
        self._provider.shutdown()
