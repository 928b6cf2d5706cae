"""The optional OTLP copy: every line the writer writes also reaches a collector, verbatim.

No OpenTelemetry Collector runs here, so a small HTTP server takes its place and decodes what the
SDK's real OTLP/HTTP exporter sends with the real protobuf messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from soberana.operator.audit.chain import Signer
from soberana.operator.audit.otlp import OtlpExporter
from soberana.operator.audit.writer import AuditWriter, WriterSettings


class Collector:
    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.kinds: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportLogsServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_logs:
                    for scope in resource.scope_logs:
                        for record in scope.log_records:
                            collector.bodies.append(record.body.string_value)
                            collector.kinds.extend(
                                a.value.string_value
                                for a in record.attributes
                                if a.key == "soberana.audit.kind"
                            )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/logs"


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        thread.join(10)


def test_every_written_line_reaches_the_collector_verbatim(
    tmp_path: Path, collector: Collector
) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    writer = AuditWriter(
        WriterSettings(tmp_path, "r1"), signer, [OtlpExporter(collector.url, "r1")]
    )
    writer.start()
    for index in range(20):
        writer.submit(lambda i: {"kind": "request", "id": f"r{i}"}, index)
    writer.close()  # flushes the exporter on the way out
    (segment,) = tmp_path.glob("*.jsonl")
    assert sorted(collector.bodies) == sorted(segment.read_text().splitlines())
    assert collector.kinds.count("request") == 20
    assert collector.kinds.count("checkpoint") == 1
