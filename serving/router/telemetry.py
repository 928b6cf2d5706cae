"""OpenTelemetry tracing: one span per request, and W3C trace context passed on to the site.

Every request gets a server span, a child of the client's ``traceparent`` when it sent one,
carrying the routing decision (candidates, exclusions, chosen site and why, retries). Its
context goes to the site in ``traceparent``/``tracestate``, so the site's spans join the trace.
Spans are exported over OTLP/HTTP only when an endpoint is configured; otherwise they are made
(so that trace context still flows) and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "soberana-router"


class Telemetry:
    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("soberana.serving.router")
        self._propagator = TraceContextTextMapPropagator()

    def start_request_span(self, name: str, incoming: Mapping[str, str]) -> trace.Span:
        """A server span for one request, continuing the trace of ``incoming`` headers."""
        parent = self._propagator.extract(incoming)
        return self._tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER)

    def inject(self, span: trace.Span, outgoing: MutableMapping[str, str]) -> None:
        """Put ``span``'s context into the headers of the request to the site."""
        self._propagator.inject(outgoing, context=trace.set_span_in_context(span))

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        self._provider.shutdown()


def make_telemetry(
    otlp_endpoint: str | None = None, processors: tuple[SpanProcessor, ...] = ()
) -> Telemetry:
    """Tracing that exports to ``otlp_endpoint`` (an OTLP/HTTP traces URL) and ``processors``."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    for processor in processors:
        provider.add_span_processor(processor)
    return Telemetry(provider)
